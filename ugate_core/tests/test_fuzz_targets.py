"""Every fuzz target in the repository runs for a moment (random mutation without atheris), so
none rots between the long runs someone does by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = sorted([*ROOT.glob("ugate_core/tests/fuzz_*.py"),
                  *ROOT.glob("plugins/*/tests/fuzz_*.py")])


def test_the_targets_are_found() -> None:
    names = {p.name for p in TARGETS}
    assert {"fuzz_tls_hello.py", "fuzz_sniff.py", "fuzz_preamble.py"} <= names, names


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_fuzz_target_runs_clean(target: Path) -> None:
    p = subprocess.run([sys.executable, str(target), "1.5"], capture_output=True, text=True,
                       timeout=120, cwd=target.parent)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "no failure" in p.stdout, p.stdout[-500:]
