"""The package's modules import one way: each imports only modules below it in the module
table of docs/design.md (lazy imports inside functions included, ``TYPE_CHECKING`` blocks
excepted), so the table is the real architecture and no import cycle can appear."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hubzarr"


def _table() -> list[str]:
    """The modules of docs/design.md's table, top floor first."""
    text = (ROOT / "docs" / "design.md").read_text()
    return re.findall(r"^\| `(\w+)\.py` \|", text, flags=re.MULTILINE)


def _imports(path: Path) -> set[str]:
    """The hubzarr modules ``path`` imports, wherever in it, but under TYPE_CHECKING."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.module.startswith("hubzarr."):
                found.add(node.module.split(".")[1])
            elif node.module == "hubzarr":
                found.update(alias.name for alias in node.names)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("hubzarr."))

    Visitor().visit(ast.parse(path.read_text()))
    return found - {path.stem}


def test_the_module_table_lists_every_module_once() -> None:
    table = _table()
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert sorted(table) == sorted(modules)
    assert len(set(table)) == len(table)


def test_every_module_imports_only_modules_below_it() -> None:
    table = _table()
    floor = {module: i for i, module in enumerate(table)}
    upward = {
        module: sorted(d for d in _imports(PACKAGE / f"{module}.py") if floor[d] <= floor[module])
        for module in table
    }
    assert not {m: ups for m, ups in upward.items() if ups}, "imports that run up the table"
