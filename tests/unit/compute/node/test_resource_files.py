from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kiln.compute.node import layout
from kiln.compute.node.failures import StepFailure
from kiln.compute.node.resource_files import fetch_resource_files
from kiln.compute.protocol import ResourceFile

from ..helpers import FileServer


async def test_files_land_in_wd_with_their_mode(paths: layout.TaskPaths, file_server: FileServer) -> None:
    file_server.files = {"/a.txt": b"alpha", "/b.sh": b"#!/bin/sh\n"}
    files = (
        ResourceFile(file_server.url("/a.txt?sig=secret"), "a.txt"),
        ResourceFile(file_server.url("/b.sh"), "bin/deep/b.sh", file_mode="0755"),
    )
    assert await fetch_resource_files(paths, files) == ["a.txt", "bin/deep/b.sh"]
    assert (paths.wd / "a.txt").read_bytes() == b"alpha"
    assert stat.S_IMODE((paths.wd / "a.txt").stat().st_mode) == 0o770
    assert stat.S_IMODE((paths.wd / "bin/deep/b.sh").stat().st_mode) == 0o755
    assert sorted(p.name for p in paths.wd.rglob("*")) == ["a.txt", "b.sh", "bin", "deep"]


async def test_a_retry_skips_finished_downloads(paths: layout.TaskPaths, file_server: FileServer) -> None:
    file_server.files = {"/a.txt": b"alpha"}
    files = (ResourceFile(file_server.url("/a.txt"), "a.txt"),)
    await fetch_resource_files(paths, files)
    assert await fetch_resource_files(paths, files) == []
    assert file_server.requests == ["/a.txt"]
    (paths.wd / "a.txt").unlink()  # gone: fetched again
    assert await fetch_resource_files(paths, files) == ["a.txt"]


async def test_not_found_is_a_user_error(paths: layout.TaskPaths, file_server: FileServer) -> None:
    with pytest.raises(StepFailure) as failure:
        await fetch_resource_files(paths, (ResourceFile(file_server.url("/missing?sig=secret"), "m.txt"),))
    info = failure.value.info
    assert (info["category"], info["code"]) == ("usererror", "BlobNotFound")
    assert "secret" not in info["message"]
    assert not list(paths.wd.iterdir())  # no partial file left behind


@pytest.mark.parametrize(
    ("status", "category", "code"),
    [
        (403, "usererror", "BlobAccessDenied"),
        (500, "servererror", "BlobDownloadMiscError"),
    ],
)
async def test_http_errors(
    paths: layout.TaskPaths, file_server: FileServer, status: int, category: str, code: str
) -> None:
    file_server.statuses = {"/x": status}
    with pytest.raises(StepFailure) as failure:
        await fetch_resource_files(paths, (ResourceFile(file_server.url("/x"), "x"),))
    assert (failure.value.info["category"], failure.value.info["code"]) == (category, code)


async def test_connection_refused_is_a_server_error(paths: layout.TaskPaths) -> None:
    with pytest.raises(StepFailure) as failure:
        await fetch_resource_files(paths, (ResourceFile("http://127.0.0.1:1/x", "x"),))
    assert failure.value.info["code"] == "BlobDownloadMiscError"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../escape.txt", "a/../../escape.txt", "", "dir/"])
async def test_a_path_outside_wd_fails_before_any_download(
    paths: layout.TaskPaths, file_server: FileServer, bad: str
) -> None:
    with pytest.raises(StepFailure) as failure:
        await fetch_resource_files(paths, (ResourceFile(file_server.url("/a"), bad),))
    assert (failure.value.info["category"], failure.value.info["code"]) == ("usererror", "ResourceFileCreateFailed")
    assert file_server.requests == []


async def test_a_symlink_out_of_wd_is_refused(paths: layout.TaskPaths, file_server: FileServer, tmp_path: Path) -> None:
    (paths.wd / "link").symlink_to(tmp_path)
    with pytest.raises(StepFailure) as failure:
        await fetch_resource_files(paths, (ResourceFile(file_server.url("/a"), "link/a"),))
    assert failure.value.info["code"] == "ResourceFileCreateFailed"


async def test_links_in_wd_are_replaced_not_written_through(
    paths: layout.TaskPaths, file_server: FileServer, tmp_path: Path
) -> None:
    """A task's account owns wd: a link at the temporary name, or where a fetched file was, is not followed."""
    file_server.files = {"/a.txt": b"alpha"}
    victim = tmp_path / "victim"
    victim.write_text("keep")
    files = (ResourceFile(file_server.url("/a.txt"), "a.txt"),)
    await fetch_resource_files(paths, files)
    (paths.wd / "a.txt").unlink()
    (paths.wd / "a.txt").symlink_to(paths.wd / "same-size")  # same size as the download: not "done"
    (paths.wd / "same-size").write_bytes(b"12345")
    (paths.wd / ".a.txt.kiln-part").symlink_to(victim)
    assert await fetch_resource_files(paths, files) == ["a.txt"]
    assert not (paths.wd / "a.txt").is_symlink() and (paths.wd / "a.txt").read_bytes() == b"alpha"
    assert victim.read_text() == "keep"
