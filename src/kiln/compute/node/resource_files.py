"""Resource files: fetch each http_url, and each container's blobs (blob_files), into the working directory
before the command runs."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from kiln.compute.node.failures import SERVER_ERROR, USER_ERROR, StepFailure
from kiln.compute.node.layout import TaskPaths, relative_path, state_dir
from kiln.compute.node.transfers import DOWNLOAD, TransferLog
from kiln.compute.protocol import ResourceFile

if TYPE_CHECKING:  # httpx is imported when first needed: it adds ~0.1 s to every worker start
    import httpx

DEFAULT_FILE_MODE = "0770"
#: Connect and per-read bounds (seconds); a whole download has no overall limit (files can be large).
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0
CHUNK = 1 << 20


def http_client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT), follow_redirects=True)


def redact(url: str) -> str:
    """Drop the query string (SAS tokens) before a URL reaches a user-visible message."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def destination(paths: TaskPaths, file: ResourceFile) -> Path:
    """The file's absolute destination; it must stay inside wd, even through symlinks."""
    try:
        rel = relative_path(file.file_path)
        if not rel.parts or rel.parts == (".",) or file.file_path.endswith("/"):
            raise ValueError("filePath must name a file")
    except ValueError as exc:
        raise create_failed(file, str(exc)) from None
    return inside_wd(paths, rel, file)


def inside_wd(paths: TaskPaths, rel: PurePosixPath, file: ResourceFile) -> Path:
    dest = paths.wd / rel
    wd_real = os.path.realpath(paths.wd)
    if os.path.commonpath([wd_real, os.path.realpath(dest)]) != wd_real:
        raise create_failed(file, f"{rel} leaves the working directory")
    return dest


@dataclass(frozen=True, slots=True)
class Part:
    """A new file that becomes dest when it is whole: a half-written file never looks finished."""

    path: Path
    fd: int


def new_part(dest: Path, file: ResourceFile) -> Part:
    """Always a new file, never through a link the task's account may have left in wd."""
    part = dest.with_name(f".{dest.name}.kiln-part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        return Part(part, os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise create_failed(file, f"{exc.strerror or exc}") from None


def file_mode(file: ResourceFile) -> int:
    try:
        return int(file.file_mode or DEFAULT_FILE_MODE, 8)
    except ValueError:
        raise create_failed(file, f"fileMode {file.file_mode!r} is not an octal number") from None


class Progress:
    """What a previous run of the same task directory already fetched (a marker file in volatile/)."""

    def __init__(self, paths: TaskPaths) -> None:
        rel = paths.task_dir.relative_to(paths.node_root)
        self.path = state_dir(paths.node_root) / "resourcefiles" / f"{rel}.json"
        try:
            self.done: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.done = {}

    def is_done(self, file: ResourceFile, dest: Path) -> bool:
        entry = self.done.get(file.file_path)
        try:
            st = dest.lstat()  # a link in its place is not the file (the task's account may have put it there)
        except OSError:
            return False
        return (
            entry is not None
            and entry["url"] == file.http_url
            and stat.S_ISREG(st.st_mode)
            and entry["size"] == st.st_size
        )

    def record(self, file: ResourceFile, dest: Path) -> None:
        self.done[file.file_path] = {"url": file.http_url, "size": dest.stat().st_size}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done))
        os.replace(tmp, self.path)


async def fetch_resource_files(
    paths: TaskPaths,
    files: tuple[ResourceFile, ...],
    client: httpx.AsyncClient | None = None,
    log: TransferLog | None = None,
) -> list[str]:
    """Fetch every file not already fetched; returns the file paths downloaded now. log: counts what moved."""
    if not files:
        return []
    log = log or TransferLog()
    progress = Progress(paths)
    fetched: list[str] = []
    own = client is None
    client = client or http_client()
    try:
        for file in files:
            mode = file_mode(file)
            if file.http_url is None:  # a container: listed and fetched again on every run: the container may change
                from kiln.compute.node.blob_files import download_container  # it imports this module

                fetched += await asyncio.to_thread(download_container, paths, file, mode, log)
                continue
            dest = destination(paths, file)
            if progress.is_done(file, dest):
                continue
            with log.timed(DOWNLOAD, redact(file.http_url)) as moved:
                moved.bytes += await download(client, file, dest)
                moved.files += 1
            os.chmod(dest, mode)
            progress.record(file, dest)
            fetched.append(file.file_path)
    finally:
        if own:
            await client.aclose()
    return fetched


async def download(client: httpx.AsyncClient, file: ResourceFile, dest: Path) -> int:
    """Stream to a temporary name, then rename: a half-written file never looks finished. Returns its size."""
    import httpx

    assert file.http_url is not None
    part: Part | None = None
    size = 0
    try:
        async with client.stream("GET", file.http_url) as response:
            if response.status_code >= 400:
                raise http_failure(file, response.status_code)
            part = new_part(dest, file)
            with open(part.fd, "wb") as out:
                async for chunk in response.aiter_bytes(CHUNK):
                    size += out.write(chunk)
        os.replace(part.path, dest)
        return size
    except StepFailure:
        raise
    except httpx.HTTPError as exc:
        raise StepFailure.of(
            SERVER_ERROR,
            "BlobDownloadMiscError",
            f"Failed to download resource file {file.file_path} from "
            f"{redact(file.http_url or '')}: {type(exc).__name__}: {exc}",
            FilePath=file.file_path,
        ) from None
    except OSError as exc:
        raise create_failed(file, f"{exc.strerror or exc}") from None
    finally:
        if part is not None:
            part.path.unlink(missing_ok=True)


def http_failure(file: ResourceFile, status: int) -> StepFailure:
    """The failure of a download the blob store answered with an HTTP error status."""
    where = f"resource file {file.file_path} from {file.source or redact(file.http_url or file.container_url or '')}"
    if status == 404:
        return StepFailure.of(
            USER_ERROR,
            "BlobNotFound",
            f"The specified blob does not exist: {where} (HTTP 404)",
            FilePath=file.file_path,
        )
    if status in (401, 403):
        return StepFailure.of(
            USER_ERROR,
            "BlobAccessDenied",
            f"Access to the blob was denied: {where} (HTTP {status})",
            FilePath=file.file_path,
        )
    return StepFailure.of(
        SERVER_ERROR, "BlobDownloadMiscError", f"Failed to download {where} (HTTP {status})", FilePath=file.file_path
    )


def create_failed(file: ResourceFile, reason: str) -> StepFailure:
    return StepFailure.of(
        USER_ERROR,
        "ResourceFileCreateFailed",
        f"Could not create resource file {file.file_path!r}: {reason}",
        FilePath=file.file_path,
    )
