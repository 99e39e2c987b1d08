"""The app includes its routers busiest first (api/app.py); that is safe only while no two routers have a route
for one path and method, so the order changes how many routes are tried, never which one answers."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any, cast

from starlette.routing import BaseRoute, Route

from kiln.api.app import create_app
from kiln.api.context import Kiln
from kiln.dev_account import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

#: what each path parameter is replaced with: plain ids, and ids that spell another route's literal segment
FILLS = ("p1", "files", "tasks", "nodes", "lifetimestats", "a/b")


def _routes(entry: Any) -> list[Route]:
    """The routes under one of the app's entries (an included router's, at any depth)."""
    router = getattr(entry, "original_router", None)  # FastAPI keeps an included router as one entry
    if router is None:
        return [entry] if isinstance(entry, Route) else []
    return [route for child in router.routes for route in _routes(child)]


def test_no_two_routers_answer_one_path_and_method(tmp_path: Path) -> None:
    state = Kiln(cast(Any, None), tmp_path, DEV_ACCOUNT_NAME, base64.b64decode(DEV_ACCOUNT_KEY))
    entries: list[BaseRoute] = create_app(state).routes
    groups = [_routes(entry) for entry in entries]
    assert sum(map(len, groups)) > 80  # every Batch route was found
    for index, group in enumerate(groups):
        for route in group:
            for fill in FILLS:
                path = re.sub(r"\{[^}]+\}", fill, route.path)
                if not route.path_regex.match(path):  # a fill with a slash, for a parameter that takes none
                    continue
                for method in route.methods or ():
                    answering = {
                        other_index
                        for other_index, other_group in enumerate(groups)
                        for other in other_group
                        if method in (other.methods or ()) and other.path_regex.match(path)
                    }
                    assert answering == {index}, f"{method} {path}: routers {sorted(answering)}"
