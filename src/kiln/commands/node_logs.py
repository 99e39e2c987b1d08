"""uploadbatchservicelogs: Kiln's own log of a node (its transitions, with what caused each) uploaded to the
Azure Storage container URL given, as block blobs under a virtual directory of its own."""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from kiln.commands import node_operations
from kiln.commands.control import Control
from kiln.errors import InvalidPropertyValue
from kiln.store import stories
from kiln.wire.times import format_time

#: The one file Kiln uploads for a node.
LOG_NAME = "kiln-node.log"


async def upload(
    control: Control, pool_id: str, node_id: str, container_url: str, start: datetime, end: datetime | None
) -> tuple[str, int]:
    """(virtualDirectoryName, numberOfFilesUploaded). The upload is done before this answers; a storage
    service that refuses it is a 400 naming containerUrl."""
    node = await node_operations.node(control, pool_id, node_id)
    records = await control.database.read(lambda conn: stories.node_story(conn, node["id"]))
    lines = [
        f"{format_time(r['at'])} {r['from_state'] or '-'} -> {r['to_state']} ({r['stimulus']}){_detail(r)}\n"
        for r in records
        if r["at"] >= start and (end is None or r["at"] <= end)
    ]
    directory = f"{control.scheduler.account_name}/{pool_id}/{node['id']}/{uuid.uuid4()}"
    target = _blob_url(container_url, f"{directory}/{LOG_NAME}")
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.put(target, content="".join(lines).encode(), headers={"x-ms-blob-type": "BlockBlob"})
    except httpx.HTTPError as error:
        raise InvalidPropertyValue("containerUrl", None, f"The container could not be reached: {error}") from None
    if answer.status_code not in (200, 201):
        raise InvalidPropertyValue(
            "containerUrl", None, f"The storage service refused the upload ({answer.status_code}): {answer.text[:200]}"
        )
    return directory, 1


def _detail(record: dict) -> str:
    return f": {record['detail']}" if record.get("detail") else ""


def _blob_url(container_url: str, name: str) -> str:
    """The blob's URL inside the container, keeping the container URL's SAS query."""
    parts = urlsplit(container_url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))
