"""The package's layout as docs/ARCHITECTURE.md draws it: every module imports only the modules listed above it."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genvs"
FACADES = {"genvs.data": "genvs.data.srn", "genvs.viz": None, "genvs.cli": None, "genvs.__main__": None, "genvs": None}
"""Package ``__init__`` files and the entry point: ``genvs.data`` re-exports the SRN reader; the others only
re-export or start the modules of their own package (checked through those modules)."""


ROWS = ("genvs.cli", "genvs.course")
"""Packages that are one row of the table: their modules may import each other."""


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _order() -> list[str]:
    """The modules in the order of the architecture table (``cli/`` stands for every module of the CLI)."""
    table = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    paths = re.findall(r"^\|[^|]*\| `([\w/]+(?:\.py|/))` \|", table, flags=re.M)
    return ["genvs." + path.removesuffix(".py").removesuffix("/").replace("/", ".") for path in paths]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The genvs modules ``path`` imports (``from genvs import rendering`` is ``genvs.rendering``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "genvs":
            if node.module == "genvs":
                found |= {f"genvs.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "genvs"}
    return found


def _rank(module: str, order: list[str]) -> int:
    for index, listed in enumerate(order):
        if module == listed or module.startswith(listed + "."):
            return index
    raise AssertionError(f"{module} is not in docs/ARCHITECTURE.md's table")


def test_every_module_is_in_the_table_and_imports_only_modules_above_it():
    order = _order()
    assert len(order) > 20 and len(set(order)) == len(order), order
    late = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module in FACADES:
            continue
        rank = _rank(module, order)
        for imported in _imports(path):
            target = FACADES.get(imported, imported)
            if target is None or any(_within(module, package) and _within(target, package) for package in ROWS):
                continue
            if _rank(target, order) > rank or (_rank(target, order) == rank and target != module):
                late.append(f"{module} imports {imported}")
    assert not late, late


def test_no_module_uses_another_modules_private_names():
    """``from genvs.x import _name`` or ``x._name`` across modules, in the package, the lessons and benchmarks."""
    names = "|".join(sorted({path.stem for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}))
    offenders = []
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "notebooks").glob("*.ipynb")]
    for path in sources:
        text = path.read_text()
        offenders += [f"{path.name}: {match}" for match in re.findall(r"from genvs[\w.]* import [^\n]*\b_\w+", text)]
        offenders += [f"{path.name}: {match}" for match in re.findall(rf"\b(?:genvs\.[\w.]*|{names})\._[a-z]\w*", text)
                      if not match.startswith(f"{path.stem}.")]
    assert not offenders, offenders
