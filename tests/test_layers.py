"""The package's layout holds: docs/ARCHITECTURE.md's module table is the package, folders are floors,
and imports go downward only, with no cycles.

Every import statement counts, those inside functions too; only imports under ``if TYPE_CHECKING:``
are left out (they never run). Run as a script to print the counts for any checkout:
``python tests/test_layers.py [REPO]``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: A row of the module table: ``| floor | `path.py`, ... | one job |``.
_ROW = re.compile(r"^\|\s*(\d+)\s*\|([^|]*)\|")
_PATH = re.compile(r"`([\w/]+\.py)`")


def module_name(path: Path, package: Path) -> str:
    """``sdsearch/core/config.py`` -> ``sdsearch.core.config``; a package's ``__init__`` is the package."""
    return ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")


def documented_floors(doc: Path, package: str = "sdsearch") -> dict[str, int]:
    """Module -> floor, from the table rows of the architecture document."""
    floors: dict[str, int] = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        row = _ROW.match(line)
        for path in _PATH.findall(row.group(2)) if row else ():
            name = ".".join([package, *Path(path).with_suffix("").parts]).removesuffix(".__init__")
            floors[name] = int(row.group(1))
    return floors


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` (module ``name``) imports, anywhere but under TYPE_CHECKING."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


@dataclass(frozen=True)
class Layout:
    """A checkout's modules, their imports and their documented floors."""

    modules: dict[str, Path]
    imports: dict[str, set[str]]
    floors: dict[str, int]

    @classmethod
    def read(cls, repo: Path = REPO) -> Layout:
        package = repo / "sdsearch"
        modules = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
        imports = {m: imported_modules(p, m, set(modules)) for m, p in modules.items()}
        return cls(modules, imports, documented_floors(repo / "docs" / "ARCHITECTURE.md"))

    def folder(self, module: str) -> str:
        """The room a module lives in (``core``, ``search``...), or the top level's own name."""
        path = self.modules[module].relative_to(self.modules["sdsearch"].parent)
        return path.parts[0] + "/" if len(path.parts) > 1 else path.name

    def cycles(self) -> list[list[str]]:
        """Strongly connected groups of more than one module (Tarjan), each sorted."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        found: list[list[str]] = []

        def connect(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            for w in self.imports[v]:
                if w not in index:
                    connect(w)
                    low[v] = min(low[v], low[w])
                elif w in stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    found.append(sorted(group))

        for v in self.modules:
            if v not in index:
                connect(v)
        return found

    def depth(self) -> int:
        """Levels of the module import graph: its longest import chain, a cycle counting as one module."""
        group = {m: tuple(c) for c in self.cycles() for m in c}
        level: dict[tuple[str, ...], int] = {}

        def height(node: tuple[str, ...]) -> int:
            if node not in level:
                level[node] = 0  # a cycle's members reach back to it: stop there
                below = {group.get(t, (t,)) for m in node for t in self.imports[m]} - {node}
                level[node] = 1 + max((height(n) for n in below), default=0)
            return level[node]

        return max((height(group.get(m, (m,))) for m in self.modules), default=0)

    def upward(self) -> list[tuple[str, str]]:
        """Imports of a module on a higher floor (between documented modules)."""
        return sorted(
            (m, t)
            for m, targets in self.imports.items()
            for t in targets
            if m in self.floors and t in self.floors and self.floors[t] > self.floors[m]
        )

    def report(self) -> str:
        per_folder = Counter(self.folder(m) for m in self.modules)
        rooms = ", ".join(f"{f} {n}" for f, n in sorted(per_folder.items(), key=lambda kv: (-kv[1], kv[0])))
        undocumented = sorted(set(self.modules) - set(self.floors))
        return "\n".join(
            [
                f"modules: {len(self.modules)} ({rooms})",
                f"floors: {len(set(self.floors.values()))} documented, {self.depth()} levels of imports",
                f"import cycles: {len(self.cycles())} {self.cycles()}",
                f"upward imports: {len(self.upward())} {self.upward()}",
                f"modules not in the table: {len(undocumented)} {undocumented}",
            ]
        )


LAYOUT = Layout.read()


def test_the_module_table_is_the_package() -> None:
    """docs/ARCHITECTURE.md lists every module of the package, and only those."""
    assert set(LAYOUT.floors) == set(LAYOUT.modules), (
        f"missing from the table: {sorted(set(LAYOUT.modules) - set(LAYOUT.floors))}; "
        f"no longer in the package: {sorted(set(LAYOUT.floors) - set(LAYOUT.modules))}"
    )


def test_each_folder_is_one_floor() -> None:
    floors: dict[str, set[int]] = {}
    for module, floor in LAYOUT.floors.items():
        floors.setdefault(LAYOUT.folder(module), set()).add(floor)
    assert {f: s for f, s in floors.items() if len(s) > 1} == {}


def test_no_import_cycles() -> None:
    assert LAYOUT.cycles() == []


def test_imports_go_downward_only() -> None:
    print(LAYOUT.report())
    assert LAYOUT.upward() == []


def test_the_walk_sees_imports_in_functions_but_not_under_type_checking(tmp_path: Path) -> None:
    """The checker itself: an import inside a function is an edge; one under TYPE_CHECKING is not."""
    package = tmp_path / "sdsearch"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sdsearch.high import b\n"
        "def f():\n    from ..high import thing\n    return thing\n"
    )
    (package / "high.py").write_text("from sdsearch.low import a\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ARCHITECTURE.md").write_text(
        "| floor | module | job |\n| --- | --- | --- |\n| 0 | `__init__.py`, `low/__init__.py`, `low/a.py` | x |\n"
        "| 1 | `high.py` | y |\n"
    )
    layout = Layout.read(tmp_path)
    assert layout.imports["sdsearch.low.a"] == {"sdsearch.high"}
    assert layout.upward() == [("sdsearch.low.a", "sdsearch.high")]
    assert layout.cycles() == [["sdsearch.high", "sdsearch.low.a"]]


if __name__ == "__main__":
    print(Layout.read(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO).report())
