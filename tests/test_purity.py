"""The architecture's promise, checked: the layers of the tree and the direction of imports.

- the core (every module at the package root but the entry points) imports no I/O, UI or
  network library, and none of the other layers;
- `adapters/` (I/O) imports the core and other adapters, never Typer, click, rich, the
  console or the commands;
- `console/` (the terminal) imports the core, the adapters and rich, never Typer or click or
  the commands;
- `commands/` and `cli.py` (the Typer layer) sit on top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plivo_stream_cli"
# Entry points: the console script, the pytest plugin (pytest11) and its plain-Python API.
ENTRY_POINTS = {"__init__", "__main__", "cli", "pytest_plugin", "testing"}
CORE = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ENTRY_POINTS)
FORBIDDEN_IN_CORE = [
    "websockets",
    "httpx",
    "typer",
    "click",
    "rich",
    "asyncio",
    "plivo",
    "pyngrok",
    "socket",
    "lxml",
]
LAYERS = {
    "core": {"forbidden": {"adapters", "console", "commands", "cli"}},
    "adapters": {"forbidden": {"console", "commands", "cli", "typer", "click", "rich"}},
    "console": {"forbidden": {"commands", "cli", "typer", "click"}},
}


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) == 1:
        return "entry" if path.stem in ENTRY_POINTS else "core"
    return relative.parts[0]


def imported(path: Path) -> set[str]:
    """Everything a module imports, at the top or inside functions: pstream's own modules as
    their layer name (`adapters`, `console`, `commands`, `cli`, `core`), others by top name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "plivo_stream_cli":
                modules = [f"plivo_stream_cli.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] != "plivo_stream_cli":
                names.add(parts[0])
            elif len(parts) > 1:
                names.add(
                    parts[1] if parts[1] in {"adapters", "console", "commands", "cli"} else "core"
                )
    return names


def test_the_core_is_every_root_module_but_the_entry_points() -> None:
    assert {"events", "session", "codec", "signature", "metrics", "feed"} <= set(CORE)
    assert not {"server", "simulator", "output", "view"} & set(CORE)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if layer_of(p) in LAYERS),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_imports_point_down_the_layers(path: Path) -> None:
    wrong = imported(path) & LAYERS[layer_of(path)]["forbidden"]
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer_of(path)}) imports {sorted(wrong)}"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_nothing_heavy(module: str) -> None:
    code = (
        "import sys\n"
        f"import plivo_stream_cli.{module}\n"
        f"print(sorted(set({FORBIDDEN_IN_CORE!r}) & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", f"{module} imports {result.stdout.strip()}"


def test_no_two_adapters_import_each_other_at_the_top() -> None:
    """No import cycle among the adapters (runner and workers once imported each other)."""
    graph: dict[str, set[str]] = {}
    for path in (PACKAGE / "adapters").glob("*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {
            node.module.rsplit(".", 1)[1]
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("plivo_stream_cli.adapters.")
        }
    for module, deps in graph.items():
        for dep in deps:
            assert module not in graph.get(dep, set()), f"{module} <-> {dep}"
