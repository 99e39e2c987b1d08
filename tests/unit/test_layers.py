"""The layering of docs/architecture.md, checked on the source: api/ only parses and renders, through commands/;
SQL is built in store/ alone; the `kiln` client commands start without the server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import kiln

SRC = Path(kiln.__file__).parent

#: What a router may not import: the store, SQL, the scheduler and the compute backend are the commands' business.
FORBIDDEN_IN_API = ("sqlalchemy", "kiln.compute", "kiln.scheduler", "kiln.store")
#: What `kiln`'s client commands (job list, task show, ...) start without: the server's web stack, store and
#: scheduler (seconds of imports on a slow machine), and the autoscale formula language; `kiln serve` and
#: `kiln autoscale simulate` load theirs when they run.
LOADED_WHEN_USED = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "distributed", "kiln.server", "kiln.api")
LOADED_WHEN_USED += ("kiln.commands", "kiln.scheduler", "kiln.store", "lark", "kiln.autoscale")
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


#: The control state's maps (kiln.scheduler.control.ControlState), which the scheduler's parts alias.
STATE_MAPS = {
    "nodes",
    "pools",
    "jobs",
    "preps",
    "waiting",
    "steps",
    "instance_counts",
    "instances",
    "subtask_nodes",
    "_instance_plans",
}
#: What changes a dict or list in place.
MUTATORS = {"pop", "popitem", "clear", "setdefault", "update", "append", "remove", "extend"}


def _state_map(node: ast.AST) -> str | None:
    """`self.<map>` → the map's name."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr if node.attr in STATE_MAPS else None
    return None


def state_problems(source: str) -> list[str]:
    """Where a scheduler part changes a control-state map itself instead of through ControlState."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            if isinstance(target, ast.Subscript) and (name := _state_map(target.value)):
                problems.append(f"line {node.lineno}: self.{name}[…] changed")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            if name := _state_map(node.func.value):
                problems.append(f"line {node.lineno}: self.{name}.{node.func.attr}()")
    return problems


def test_only_the_control_state_changes_its_maps() -> None:
    found = {
        path.name: problems
        for path in _modules("scheduler")
        if path.name != "control.py" and (problems := state_problems(path.read_text()))
    }
    assert found == {}


@pytest.mark.parametrize(
    "source",
    [
        "self.steps[step_id] = ref",
        "del self.jobs[key]",
        "self.preps.pop(key, None)",
        "self.waiting.setdefault(key, []).append(1)",
        "self.nodes[node_id] += 1",
    ],
)
def test_a_part_changing_a_map_itself_is_found(source: str) -> None:
    assert state_problems(source)


def test_the_kiln_command_loads_the_server_and_the_formula_language_only_when_used() -> None:
    code = "import sys, kiln.cli.main; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(name for name in loaded if any(_within(name, part) for part in LOADED_WHEN_USED)) == []
    assert "typer" in loaded and "azure.batch" in loaded  # what the client commands do need
