"""The public API is enforced: in-tree plugins import only what ugate_core documents.

Public: the names ``ugate_core`` exports (``__all__``) and the modules listed in its
docstring (:data:`PUBLIC_MODULES`). A plugin importing any other core module, or a
``_private`` name of another distribution, fails here: give the name a public home instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ugate_core

ROOT = Path(__file__).resolve().parents[2]
#: core modules a plugin may import besides ``ugate_core`` itself
PUBLIC_MODULES = frozenset({"ugate_core.options", "ugate_core.testing", "ugate_core.tokens"})


def plugin_sources() -> list[Path]:
    out = []
    for pkg in sorted(ROOT.glob("plugins/*/ugate_*")):
        if pkg.is_dir() and not pkg.name.endswith(".egg-info"):
            out += sorted(pkg.rglob("*.py"))
    return out


def problems(path: Path, root: Path = ROOT) -> list[str]:
    where = path.relative_to(root)
    own = where.parts[2]  # plugins/<dist>/<package>/...
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    bad: list[str] = []

    def check_module(mod: str, line: int) -> None:
        top = mod.split(".")[0]
        if top == "ugate_core" and mod != "ugate_core" and mod not in PUBLIC_MODULES:
            bad.append(f"{where}:{line}: imports {mod}, not a public core module")
        if top != own and any(p.startswith("_") for p in mod.split(".")[1:]):
            bad.append(f"{where}:{line}: imports private module {mod}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                check_module(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mod = node.module
            check_module(mod, node.lineno)
            top = mod.split(".")[0]
            for a in node.names:
                if top != own and a.name.startswith("_"):
                    bad.append(f"{where}:{node.lineno}: imports private {mod}.{a.name}")
                if mod == "ugate_core" and a.name not in ugate_core.__all__ and (
                        f"ugate_core.{a.name}" not in PUBLIC_MODULES):
                    bad.append(f"{where}:{node.lineno}: ugate_core.{a.name} is not exported")
    return bad


def test_plugins_import_only_the_public_core_api() -> None:
    files = plugin_sources()
    assert len(files) > 20, files  # the walk finds the plugins
    bad = [p for f in files for p in problems(f)]
    assert bad == [], "\n".join(bad)


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    pkg = tmp_path / "plugins" / "ugate_socks" / "ugate_socks"
    pkg.mkdir(parents=True)
    probe = pkg / "probe.py"
    probe.write_text("from ugate_core.gateway import Gateway\nfrom ugate_core import _builtin\n"
                     "from ugate_http.state import _STATE\nimport ugate_core.relay\n"
                     "from ugate_core import Stream, options\nfrom ugate_socks import _own\n")
    found = problems(probe, tmp_path)
    assert len(found) == 5, found  # gateway, _builtin (private + not exported), _STATE, relay


def test_the_docstring_lists_the_public_modules() -> None:
    doc = ugate_core.__doc__ or ""
    for m in PUBLIC_MODULES:
        assert f"``{m}``" in doc
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for m in PUBLIC_MODULES:
        assert f"`{m}`" in docs, f"docs/plugins.md does not list {m}"
