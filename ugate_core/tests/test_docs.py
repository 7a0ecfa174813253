"""Docs stay true: the hook reference is generated from the specs, examples run."""

from __future__ import annotations

import inspect
import os
import runpy
import subprocess
import sys
from pathlib import Path

from ugate_core import hookspecs

REPO = Path(__file__).resolve().parents[2]


def test_every_hook_is_documented_and_reference_is_current() -> None:
    gen = runpy.run_path(str(REPO / "docs/gen_hooks.py"))
    for name, fn in gen["specs"]():
        doc = inspect.getdoc(fn) or ""
        assert len(doc) > 40, f"hook {name} has no real docstring"
    committed = (REPO / "docs/hooks.md").read_text()
    assert committed == gen["render"](), "docs/hooks.md is stale: run `make docs`"
    for name in dir(hookspecs):
        if name.startswith("ugate_"):
            assert f"## `{name}`" in committed


def test_embedding_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "UGATE_STATE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(REPO / "docs/examples/embed.py")],
                         capture_output=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"
