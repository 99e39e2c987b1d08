"""Output files (batch-semantics §6.6, -2 §5.3): after the command exits and before the step reports, the files
its outputFiles' patterns match go to their Blob containers, under the upload condition the exit code meets.

Patterns are `$VAR`-expanded with the task's environment, then globbed relative to wd (or absolute): `*` stays in
one directory, `**` crosses any, `?`, `[abc]`, `[a-c]`, `[!abc]`; names starting with a dot match only a pattern
part that starts with one. A pattern without wildcards names one blob (`path`, else the file's name); with
wildcards, `path` is a prefix and each file keeps its path below the pattern's wildcard-free directories.
Each attempt appends JSON lines to fileuploadout.txt (every file uploaded) and fileuploaderr.txt (every error)
in the task directory; a failure fails the step with an upload error (not retried).
"""

from __future__ import annotations

import glob
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.compute.node import blob_storage
from kiln.compute.node.blob_storage import Cause
from kiln.compute.node.failures import SERVER_ERROR, USER_ERROR, StepFailure, failure_info
from kiln.compute.node.identity import Account
from kiln.compute.node.layout import TaskPaths
from kiln.compute.node.resource_files import redact
from kiln.compute.node.transfers import UPLOAD, TransferLog
from kiln.compute.protocol import OutputFile

OUT_LOG, ERR_LOG = "fileuploadout.txt", "fileuploaderr.txt"
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_WILDCARD = re.compile(r"[*?\[]")
_ESCAPED = re.compile(r"\[[^!]\]")  #: a class of one character (`[*]`, `[[]`): a literal, not a wildcard
#: uploadHeaders that set a blob's properties; others go on the request as they are (x-ms-meta-*: metadata).
_CONTENT_SETTINGS = {
    "content-type": "content_type",
    "content-encoding": "content_encoding",
    "content-language": "content_language",
    "content-disposition": "content_disposition",
    "cache-control": "cache_control",
}
_CODES = {
    Cause.CONTAINER_NOT_FOUND: (
        USER_ERROR,
        "FileUploadContainerNotFound",
        "One of the specified Azure container(s) was not found while attempting to upload an output file",
    ),
    Cause.ACCESS_DENIED: (
        USER_ERROR,
        "FileUploadAccessDenied",
        "Access for one of the specified Azure container(s) was denied while attempting to upload an output file",
    ),
    Cause.BLOB_NOT_FOUND: (SERVER_ERROR, "FileUploadMiscError", "An error occurred while uploading an output file"),
    Cause.OTHER: (SERVER_ERROR, "FileUploadMiscError", "An error occurred while uploading an output file"),
}


class UploadFailure(StepFailure):
    """The step's output files could not all be uploaded: the task fails with an upload error."""


def applies(condition: str, exit_code: int | None) -> bool:
    """tasksuccess: exit 0; taskfailure: anything else (a timeout too); taskcompletion: either."""
    condition = condition.lower()
    if condition == "taskcompletion":
        return True
    return (exit_code == 0) == (condition == "tasksuccess")


def expand(pattern: str, env: Mapping[str, str]) -> str:
    """$VAR and ${VAR} from the task's environment; an unknown variable is left as it is."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), pattern)


@dataclass(frozen=True, slots=True)
class Match:
    path: Path  #: absolute
    blob: str  #: the blob's name in the destination container


def resolve(output: OutputFile, pattern: str, wd: Path) -> list[Match]:
    """The regular files a pattern matches (sorted), each with its blob name."""
    found = (wd / p for p in sorted(glob.glob(pattern, root_dir=wd, recursive=True)))  # wd / absolute: absolute
    files = [p for p in found if stat.S_ISREG(os.stat(p).st_mode)]
    if not _wild(pattern):
        return [Match(f, output.path or f.name) for f in files]
    parts = pattern.split("/")
    static = [
        _ESCAPED.sub(lambda m: m.group(0)[1], part)
        for part in parts[: next(i for i, p in enumerate(parts) if _wild(p))]
    ]
    base = Path("/".join(static)) if pattern.startswith("/") else wd.joinpath(*static)
    prefix = (output.path or "").strip("/")
    matches = []
    for file in files:
        rel = os.path.relpath(file, base)
        matches.append(Match(file, f"{prefix}/{rel}" if prefix else rel))
    return matches


def _wild(pattern: str) -> bool:
    return bool(_WILDCARD.search(_ESCAPED.sub("", pattern)))


def readable_by(path: Path, account: Account | None) -> bool:
    """The service uploads as root: a task account's patterns reach only files that account may read (links are
    followed to the file they name, whose bits decide)."""
    if account is None:
        return True
    st = os.stat(path)
    if st.st_uid == account.uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == account.gid:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def upload_all(
    outputs: tuple[OutputFile, ...],
    exit_code: int | None,
    env: Mapping[str, str],
    paths: TaskPaths,
    account: Account | None,
    transfers: TransferLog,
) -> None:
    """Blocking (run it in a thread). Every output whose condition holds is attempted; the first error fails the
    step after the rest are done. transfers counts what moved."""
    chosen = [o for o in outputs if applies(o.upload_condition, exit_code)]
    if not chosen:
        return
    log = _Logs(paths.task_dir)
    first: StepFailure | None = None
    for output in chosen:
        pattern = expand(output.file_pattern, env)
        try:
            matches = resolve(output, pattern, paths.wd)
        except OSError as exc:
            first = first or _failed(log, output, pattern, None, exc)
            continue
        if not matches:
            log.out({"pattern": output.file_pattern, "resolved": pattern, "files": 0})
            continue
        for match in matches:
            try:
                if not readable_by(match.path, account):
                    raise PermissionError(f"the task's account may not read {match.path}")
                with transfers.timed(UPLOAD, redact(output.container_url)) as moved:
                    size = _upload(output, match)
                    moved.bytes += size
                    moved.files += 1
            except Exception as exc:  # the SDK's errors and the OS's
                first = first or _failed(log, output, pattern, match, exc)
                continue
            log.out(
                {
                    "pattern": output.file_pattern,
                    "file": str(match.path),
                    "destination": redact(output.container_url),
                    "blob": match.blob,
                    "bytes": size,
                }
            )
    if first is not None:
        raise first


def _upload(output: OutputFile, match: Match) -> int:
    """Streamed from the file in blocks of blob_storage.CHUNK."""
    from azure.storage.blob import ContentSettings

    settings: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    headers: dict[str, str] = {}
    for name, value in output.upload_headers:
        lowered = name.lower()
        if lowered in _CONTENT_SETTINGS:
            settings[_CONTENT_SETTINGS[lowered]] = value
        elif lowered.startswith("x-ms-meta-"):
            metadata[name[len("x-ms-meta-") :]] = value
        else:
            headers[name] = value
    with blob_storage.container_client(output.container_url) as container, open(match.path, "rb") as data:
        size = os.fstat(data.fileno()).st_size
        container.upload_blob(
            match.blob,
            data,
            length=size,
            overwrite=True,
            max_concurrency=1,
            content_settings=ContentSettings(**settings) if settings else None,
            metadata=metadata or None,
            **({"headers": headers} if headers else {}),  # type: ignore[arg-type]  # to azure-core's pipeline
        )
    return size


def _failed(log: _Logs, output: OutputFile, pattern: str, match: Match | None, exc: Exception) -> UploadFailure:
    category, code, message = _CODES[blob_storage.cause(exc)]
    log.err(
        {
            "code": code,
            "user_error": category == USER_ERROR,
            "pattern": output.file_pattern,
            "file": str(match.path) if match else pattern,
            "destination": redact(output.container_url),
            "message": blob_storage.describe(exc),
        }
    )
    return UploadFailure(
        failure_info(category, code, f"{message}: {blob_storage.describe(exc)}", FilePattern=output.file_pattern)
    )


class _Logs:
    """fileuploadout.txt and fileuploaderr.txt, made when the first line is written (absent: nothing tried)."""

    def __init__(self, task_dir: Path) -> None:
        self.task_dir = task_dir

    def out(self, line: dict[str, Any]) -> None:
        self._write(OUT_LOG, line)

    def err(self, line: dict[str, Any]) -> None:
        self._write(ERR_LOG, line)

    def _write(self, name: str, line: dict[str, Any]) -> None:
        fd = os.open(self.task_dir / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with open(fd, "a") as log:
            log.write(json.dumps(line) + "\n")
