"""The dashboard's pages: parse the query, read through commands/, render a template. Every page but the login
form asks for a session (kiln.web.session); each polls itself for its live part (htmx, hx-select)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from kiln.api.context import kiln
from kiln.commands import dashboard, files, stories
from kiln.core.task import task_dir
from kiln.errors import BadRequest, KilnError
from kiln.web import session, timeline

HERE = Path(__file__).parent
STATIC = {"htmx.min.js": "text/javascript", "kiln.css": "text/css", "favicon.svg": "image/svg+xml"}
#: No framing (clickjacking), no script or style from elsewhere, nothing cached of what a session sees.
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
#: How often a page refreshes its live part (seconds), and less often when it counts this many tasks or more
#: (counting them is what a refresh costs most).
REFRESH, SLOW_REFRESH, MANY_TASKS = 2, 10, 20_000
#: Tasks per page of a job's task table, and bars in its timeline.
PAGE_SIZE = 50
TIMELINE_BARS = 1000
#: Recent tasks on a node's page.
NODE_RECENT = 50
#: States a job's tasks can be filtered by (succeeded and failed: completed, by result).
TASK_STATES = ("active", "preparing", "running", "completed", "succeeded", "failed")

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["time"] = lambda value: value.strftime("%Y-%m-%d %H:%M:%S") if value else ""
templates.env.globals["task_dir"] = task_dir
templates.env.filters["short_id"] = timeline.short_id
templates.env.filters["timestamp"] = lambda seconds: datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _signed_in(request: Request) -> bool:
    state = kiln(request)
    return session.valid(request.cookies.get(session.COOKIE), state.account_name, state.account_key)


def _error_page(request: Request, error: KilnError) -> Response:
    context = {"error": error, "signed_in": True}
    return templates.TemplateResponse(request, "error.html", context, status_code=error.status)


class DashboardRoute(APIRoute):
    """A page behind the login form, whose Batch errors (a job that is gone) render as a page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if not _signed_in(request):
                login = "/ui/login?" + urlencode({"next": request.url.path + _query(request)})
                if request.headers.get("hx-request"):
                    return Response(status_code=401, headers={"HX-Redirect": login})
                return RedirectResponse(login, status_code=303)
            try:
                response = await handler(request)
            except KilnError as error:
                response = _error_page(request, error)
            response.headers.update(PAGE_HEADERS)
            return response

        return guarded


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


public = APIRouter()
pages = APIRouter(route_class=DashboardRoute)


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"signed_in": True, **context})


@public.get("/ui/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response(status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})


@public.get("/ui/login")
async def login_form(request: Request, next: str = "/") -> HTMLResponse:
    response = templates.TemplateResponse(request, "login.html", {"next": _local(next), "failed": False})
    response.headers.update(PAGE_HEADERS)
    return response


@public.post("/ui/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    secret, target = form.get("key", [""])[0], _local(form.get("next", ["/"])[0])
    state = kiln(request)
    if not session.accepts(secret, state.account_name, state.account_key):
        context = {"next": target, "failed": True}
        return templates.TemplateResponse(request, "login.html", context, status_code=403)
    response = RedirectResponse(target, status_code=303)
    cookie = session.issue(state.account_name, state.account_key)
    response.set_cookie(session.COOKIE, cookie, max_age=session.LIFETIME, httponly=True, samesite="strict", path="/")
    return response


@public.post("/ui/logout")
async def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(session.COOKIE, path="/")
    return response


def _local(target: str) -> str:
    """Only a path on this server is a place to go after signing in (never another site)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@pages.get("/")
async def overview(request: Request) -> HTMLResponse:
    pools, jobs = await dashboard.overview(kiln(request).control)
    counted = sum(job.counts["active"] + job.counts["running"] + job.counts["completed"] for job in jobs)
    return _page(request, "overview.html", pools=pools, jobs=jobs, refresh=_refresh(counted))


@pages.get("/ui/pools/{pool_id}")
async def pool(request: Request, pool_id: str) -> HTMLResponse:
    view = await dashboard.pool_view(kiln(request).control, pool_id)
    return _page(request, "pool.html", pool=view)


@pages.get("/ui/pools/{pool_id}/nodes/{node_id}")
async def node(request: Request, pool_id: str, node_id: str, path: str = "") -> HTMLResponse:
    control = kiln(request).control
    view = await dashboard.node_view(control, pool_id, node_id, recent=NODE_RECENT)
    listing = await _listing(control, await files.node_files(control, pool_id, node_id), path)
    base = f"/ui/pools/{pool_id}/nodes/{node_id}"
    return _page(request, "node.html", node=view, path=path.strip("/"), listing=listing, file_href=_browser(base, path))


@pages.get("/ui/pools/{pool_id}/nodes/{node_id}/file")
async def node_file(request: Request, pool_id: str, node_id: str, path: str, tail: bool = False) -> HTMLResponse:
    control = kiln(request).control
    location = await files.node_files(control, pool_id, node_id)
    return await _file(request, control, location, path, tail, back=f"/ui/pools/{pool_id}/nodes/{node_id}")


@pages.get("/ui/jobs/{job_id}")
async def job(
    request: Request,
    job_id: str,
    state: str = "",
    exit_code: str = "",
    after: int | None = None,
    before: int | None = None,
    failed_only: bool = False,
    until: str = "",
) -> HTMLResponse:
    chosen = dashboard.TaskFilter(_state(state), _exit_code(exit_code), after, before)
    view = await dashboard.job_view(
        kiln(request).control, job_id, chosen, size=PAGE_SIZE, bars=TIMELINE_BARS, until=_moment(until)
    )
    preparations = [r for r in view.preparations if not failed_only or _step_failed(r)]
    drawn = timeline.lay_out(view.timeline, view.timeline_until)
    filters = {"state": state, "exit_code": exit_code}
    return _page(
        request,
        "job.html",
        job=view,
        row=view.row,
        until=until,
        chosen=chosen,
        filters=filters,
        states=TASK_STATES,
        preparations=preparations,
        failed_only=failed_only,
        timeline=drawn,
        timeline_svg=timeline.svg(drawn, view.row["id"]),
        bars_limit=TIMELINE_BARS,
        refresh=_refresh(view.counts["active"] + view.counts["running"] + view.counts["completed"]),
        link=lambda **changes: _link(request, **changes),
    )


def _refresh(tasks: int) -> int:
    return REFRESH if tasks < MANY_TASKS else SLOW_REFRESH


def _link(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None: removed)."""
    params = {k: v for k, v in request.query_params.items() if k not in changes}
    params.update({k: v for k, v in changes.items() if v is not None})
    return request.url.path + ("?" + urlencode(params) if params else "")


def _state(value: str) -> str | None:
    if value and value not in TASK_STATES:
        raise BadRequest(f"Unknown task state '{value}': one of {', '.join(TASK_STATES)}.")
    return value or None


def _exit_code(value: str) -> int | None:
    try:
        return int(value) if value.strip() else None
    except ValueError:
        raise BadRequest(f"The exit code must be a whole number, not '{value}'.") from None


def _moment(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value).astimezone(UTC) if value else None
    except ValueError:
        raise BadRequest(f"'{value}' is not a time (ISO 8601).") from None


def _step_failed(record: dict[str, Any]) -> bool:
    """Whether a node's preparation or release task failed there."""
    return "failure" in (record["prep_result"], record["release_result"])


@pages.get("/ui/jobs/{job_id}/tasks/{task_id}")
async def task(request: Request, job_id: str, task_id: str) -> HTMLResponse:
    control = kiln(request).control
    story = await stories.of_task(control, job_id, task_id)
    listing: list[files.FileEntry] | str = "The task has not run on a node yet."
    if story.task["node_id"]:
        listing = await _listing(control, await files.task_files(control, job_id, task_id), "")
    directory = task_dir(story.job["id"], story.task["id"])

    def file_href(entry: files.FileEntry) -> str:
        if entry.is_directory:  # browsed on the node
            node = f"/ui/pools/{story.task['pool_id']}/nodes/{story.task['node_id']}"
            return f"{node}?{urlencode({'path': f'{directory}/{entry.name}'})}"
        return f"/ui/jobs/{job_id}/tasks/{task_id}/file?{urlencode({'path': entry.name})}"

    return _page(request, "task.html", story=story, listing=listing, file_href=file_href)


@pages.get("/ui/jobs/{job_id}/tasks/{task_id}/file")
async def task_file(request: Request, job_id: str, task_id: str, path: str, tail: bool = False) -> HTMLResponse:
    control = kiln(request).control
    location = await files.task_files(control, job_id, task_id)
    return await _file(request, control, location, path, tail, back=f"/ui/jobs/{job_id}/tasks/{task_id}")


def _browser(base: str, directory: str) -> Callable[[files.FileEntry], str]:
    """Where an entry of a node's directory links: a directory to its listing, a file to its page."""

    def href(entry: files.FileEntry) -> str:
        path = "/".join(p for p in (directory.strip("/"), entry.name) if p)
        return (
            f"{base}?{urlencode({'path': path})}" if entry.is_directory else f"{base}/file?{urlencode({'path': path})}"
        )

    return href


async def _listing(control: Any, location: files.Location, path: str) -> list[files.FileEntry] | str:
    """A directory's entries, or why they cannot be listed (the node is gone, the directory is not there)."""
    try:
        return await dashboard.browse(control, location, path)
    except KilnError as error:
        return error.message


async def _file(
    request: Request, control: Any, location: files.Location, path: str, tail: bool, back: str
) -> HTMLResponse:
    """A file's last bytes: the whole page, or (tail) only the text, for a page that polls it."""
    text = await dashboard.tail(control, location, path)
    if tail:
        return templates.TemplateResponse(request, "tail.html", {"text": text})
    return _page(request, "file.html", path=path, text=text, back=back, url=request.url.path)


router = APIRouter()
router.include_router(public)
router.include_router(pages)
