"""The package's imports run one way, down the data path, with no cycle and nothing hidden.

Stages, in order: the shared ground (settings, errors, records, models, auth), ``functions``
(what users write), ``capture`` (stage 1), ``backends`` (stage 2), ``engine`` (stage 3),
``server`` (stage 4). A module may import its own stage and the ones before it, never a later
one; the wiring modules (apps, checks, routing, urls, admin, the management command) may import any.
The client imports nothing of the server.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reactive"

STAGES = ["ground", "functions", "capture", "backends", "engine", "server"]
GROUND = {"settings", "errors", "records", "models", "auth"}
WIRING = {"apps", "checks", "routing", "urls", "admin", "management", "__init__", "migrations"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str | None:
    """The stage of ``reactive.x.y``; None for the wiring modules and the client."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    top = parts[1]
    if top in GROUND:
        return "ground"
    if top in STAGES:
        return top
    return None


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported reactive module, whether the import is inside a function) for one file."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("reactive"):
                    for alias in child.names:
                        # "from . import x" imports the module x
                        candidate = f"{target}.{alias.name}"
                        is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(
                            ".py"
                        ).exists() or (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                        found.append((candidate if is_module else target, inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.startswith("reactive"))
            visit(child, inner)

    visit(tree, False)
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_data_path(path: Path) -> None:
    module = module_name(path)
    stage = stage_of(module)
    if module.startswith("reactive.client"):
        assert all(target.startswith("reactive.client") for target, _ in imports_of(path)), (
            "the client must load without the server"
        )
        return
    if stage is None:
        return
    later = STAGES[STAGES.index(stage) + 1 :]
    imported = [target for target, _ in imports_of(path)]
    wrong = [t for t in imported if stage_of(t) in later or (stage_of(t) is None and t != "reactive")]
    assert not wrong, f"{module} ({stage}) imports a later stage or the wiring: {wrong}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_of_the_package_hides_inside_a_function(path: Path) -> None:
    hidden = [target for target, nested in imports_of(path) if nested]
    assert not hidden, f"{module_name(path)} imports {hidden} inside a function"


def test_every_module_belongs_to_a_stage_or_the_wiring() -> None:
    for path in SOURCES:
        module = module_name(path)
        top = module.split(".")[1] if "." in module else "__init__"
        assert stage_of(module) is not None or top in WIRING | {"client"}, module
