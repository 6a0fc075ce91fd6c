"""The layout keeps its promises: imports go one way, and the architecture doc names
only paths that exist.

The direction (``docs/architecture.md``): cli -> web -> consumers -> store -> eventlog,
and producer -> eventlog; compat and integrations sit beside the producer; the shared
top-level modules (errors, ids, limits, events, paths, signals) import no layer. Every import is
checked, function-level ones included: a lazy import still ties the layers together.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "waddle"
LAYERS = (
    *("producer", "compat", "integrations", "blobs", "eventlog"),
    *("store", "consumers", "web", "cli"),
)
# What each layer may import besides itself. "waddle" is the package's own __init__, the
# producer's public face (``import waddle``); "top" the shared top-level modules.
BELOW = {"top": set(), "eventlog": {"top"}, "blobs": {"top"}}  # blobs: content-addressed files
BELOW["store"] = BELOW["eventlog"] | {"eventlog", "blobs"}
BELOW["consumers"] = BELOW["store"] | {"store"}
BELOW["web"] = BELOW["consumers"] | {"consumers"}
BELOW["producer"] = BELOW["eventlog"] | {"eventlog", "blobs"}
BELOW["waddle"] = BELOW["producer"] | {"producer", "compat"}
BELOW["compat"] = BELOW["producer"] | {"producer", "waddle"}
BELOW["integrations"] = BELOW["compat"] | {"compat"}
BELOW["cli"] = BELOW["web"] | {"web", "producer", "waddle", "compat", "integrations"}
# Allowed only inside a function, so that importing the layer does not load the other:
# the wandb ``Api`` brings the DuckDB tables up to date and reads them when it is used.
LAZY = {"compat": {"store", "consumers"}}
# Imports that break the direction today, each with the reason it is still there.
KNOWN: dict[tuple[str, str], str] = {}
ARCHITECTURE = REPO / "docs" / "architecture.md"
NAMED_PATH = re.compile(r"`((?:waddle|tests|docs|benchmarks|consumers)/[^`\s]*)`")


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository, e.g. waddle/web/api.py
    line: int
    module: str  # the imported module, absolute
    lazy: bool  # inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    place = REPO / Path(*name.split("."))
    return place.with_suffix(".py").exists() or place.is_dir()


def layer(module: str) -> str | None:
    """The layer of a ``waddle`` module; None outside the package."""
    parts = module.split(".")
    if parts[0] != "waddle":
        return None
    if len(parts) == 1:
        return "waddle"
    if parts[1] == "__main__":
        return "cli"
    if parts[1] in LAYERS:
        return parts[1]
    return "unplaced" if (PACKAGE / parts[1]).is_dir() else "top"


def imports_of(path: Path, source: str | None = None) -> list[Import]:
    """Every import in ``path`` (or in ``source`` read as if it were there), relative ones
    resolved, ``from waddle import x`` as ``waddle.x`` when ``x`` is a module."""
    rel = str(path.relative_to(REPO))
    own = module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend(Import(rel, child.lineno, a.name, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    prefix = package[: len(package) - child.level + 1]
                    base = ".".join([*prefix, *([base] if base else [])])
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(rel, child.lineno, sub if is_module(sub) else base, lazy))
            visit(child, inner)

    if source is None:
        source = path.read_text(encoding="utf-8")
    visit(ast.parse(source), False)
    return found


def upward_imports() -> list[tuple[Import, str, str]]:
    """(import, importer's layer, imported layer) for every import against the direction."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer(module_name(path))
        assert source not in (None, "unplaced"), f"{path}: a package in no layer (LAYERS)"
        for found in imports_of(path):
            target = layer(found.module)
            if target is None or target == source or target in BELOW[source]:
                continue
            if found.lazy and target in LAZY.get(source, set()):
                continue
            wrong.append((found, source, target))
    return wrong


def test_imports_go_one_way() -> None:
    wrong = [w for w in upward_imports() if (w[0].path, w[0].module) not in KNOWN]
    report = sorted(
        {f"{i.path}:{i.line}: {src} imports {dst} ({i.module})" for i, src, dst in wrong}
    )
    assert not report, "imports against the layer direction:\n" + "\n".join(report)


def test_known_exceptions_still_exist() -> None:
    """An exception that was fixed leaves the list, so it cannot come back unnoticed."""
    present = {(i.path, i.module) for i, _, _ in upward_imports()}
    assert set(KNOWN) <= present, f"fixed, remove from KNOWN: {set(KNOWN) - present}"


def test_the_checker_sees_function_level_and_relative_imports() -> None:
    """The checker itself: lazy, relative and ``from waddle import`` imports are found."""
    source = (
        "def f():\n    from ..web import app\n    import waddle.cli.parser\n"
        "from waddle import paths\n"
    )
    found = imports_of(PACKAGE / "store" / "queries.py", source)
    assert [(i.module, i.lazy) for i in found] == [
        ("waddle.web.app", True),
        ("waddle.cli.parser", True),
        ("waddle.paths", False),
    ]
    assert [layer(i.module) for i in found] == ["web", "cli", "top"]


def test_every_path_the_architecture_names_exists() -> None:
    named = sorted(set(NAMED_PATH.findall(ARCHITECTURE.read_text(encoding="utf-8"))))
    assert named, "docs/architecture.md names no paths: the pattern is wrong"
    missing = [name for name in named if not (REPO / name.rstrip("/")).exists()]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
