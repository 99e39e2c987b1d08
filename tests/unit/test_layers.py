"""The layering of docs/architecture.md, checked on the source: api/ only parses and renders, through commands/;
SQL is built in store/ alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kiln

SRC = Path(kiln.__file__).parent

#: What a router may not import: the store, SQL, the scheduler and the compute backend are the commands' business.
FORBIDDEN_IN_API = ("sqlalchemy", "kiln.compute", "kiln.scheduler", "kiln.store")
#: Attributes of the server's parts, which only commands use.
FORBIDDEN_ATTRIBUTES = {"backend", "database", "scheduler"}


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def _imported(tree: ast.AST) -> list[str]:
    """Every module an import statement names (`from a import b` names a and a.b, since b may be a module)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def api_problems(source: str) -> list[str]:
    tree = ast.parse(source)
    problems = [f"imports {name}" for name in _imported(tree) if any(_within(name, bad) for bad in FORBIDDEN_IN_API)]
    problems += [
        f"uses .{node.attr} (line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES
    ]
    return problems


def sql_problems(source: str) -> list[str]:
    """Outside store/, SQLAlchemy gives only the Connection type a transaction's work takes."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            problems += [f"imports {a.name}" for a in node.names if _within(a.name, "sqlalchemy")]
        elif isinstance(node, ast.ImportFrom) and node.module and _within(node.module, "sqlalchemy"):
            allowed = node.module == "sqlalchemy"
            problems += [
                f"imports {node.module}.{a.name}" for a in node.names if not (allowed and a.name == "Connection")
            ]
    return problems


def commands_problems(source: str) -> list[str]:
    return [f"imports {name}" for name in _imported(ast.parse(source)) if _within(name, "kiln.api")]


@pytest.mark.parametrize("path", _modules("api") + _modules("web"), ids=lambda p: str(p.relative_to(SRC)))
def test_api_modules_reach_the_rest_only_through_commands(path: Path) -> None:
    """The dashboard's pages (web/) are routers too."""
    assert api_problems(path.read_text()) == []


@pytest.mark.parametrize("path", _modules("commands"), ids=lambda p: p.name)
def test_commands_know_nothing_of_the_api(path: Path) -> None:
    assert commands_problems(path.read_text()) == []


OUTSIDE_STORE = [path for path in sorted(SRC.rglob("*.py")) if (SRC / "store") not in path.parents]


@pytest.mark.parametrize("path", OUTSIDE_STORE, ids=lambda p: str(p.relative_to(SRC)))
def test_no_sql_is_built_outside_the_store(path: Path) -> None:
    assert sql_problems(path.read_text()) == []


def test_there_are_modules_to_check() -> None:
    assert len(_modules("api")) > 5 and len(_modules("commands")) > 5 and len(_modules("web")) > 2
    assert len([p for p in OUTSIDE_STORE if (SRC / "scheduler") in p.parents]) > 5


@pytest.mark.parametrize(
    "source",
    [
        "from sqlalchemy import select",
        "from sqlalchemy import Connection, update",
        "import sqlalchemy",
        "from sqlalchemy.sql import func",
        "from sqlalchemy.engine import Connection",
    ],
)
def test_each_kind_of_sql_outside_the_store_is_caught(source: str) -> None:
    assert sql_problems(source)


def test_the_connection_type_is_allowed_everywhere() -> None:
    assert sql_problems("from sqlalchemy import Connection") == []


@pytest.mark.parametrize(
    "source",
    [
        "from sqlalchemy import select",
        "import sqlalchemy.orm",
        "from kiln.store import rows as db",
        "from kiln import scheduler",
        "from kiln.compute.protocol import FileEntry",
        "state.database.read(f)",
        "kiln(request).backend.list_files()",
        "x = state.scheduler",
    ],
)
def test_each_kind_of_breach_is_caught(source: str) -> None:
    assert api_problems(source)


def test_commands_importing_the_api_is_caught() -> None:
    assert commands_problems("from kiln.api.http import parse")
    assert commands_problems("import kiln.api")
