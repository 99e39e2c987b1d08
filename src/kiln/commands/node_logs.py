"""uploadbatchservicelogs: Kiln's own log of a node (its transitions, with what caused each) uploaded to the
Azure Storage container URL given (its SAS token the credential) through azure-storage-blob, as a block blob
under a virtual directory of its own."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

from kiln.commands import node_operations
from kiln.commands.control import Control
from kiln.compute.node import blob_storage
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
    try:
        await asyncio.to_thread(_upload, container_url, f"{directory}/{LOG_NAME}", "".join(lines).encode())
    except Exception as error:  # the SDK's errors (refused, unreachable) and a URL it cannot parse
        raise InvalidPropertyValue(
            "containerUrl", None, f"The log could not be uploaded to the container: {blob_storage.describe(error)}"
        ) from None
    return directory, 1


def _upload(container_url: str, name: str, data: bytes) -> None:
    """Typed as text, so a browser or Storage Explorer shows it; a large log goes in blocks of blob_storage.CHUNK.
    One try: the request waits for it, and the SDK's retries back off for 15 s and more (the caller may ask again)."""
    from azure.storage.blob import ContentSettings

    with blob_storage.container_client(container_url, retries=0) as container:
        settings = ContentSettings(content_type="text/plain; charset=utf-8")
        container.upload_blob(name, data, overwrite=True, content_settings=settings)


def _detail(record: dict) -> str:
    return f": {record['detail']}" if record.get("detail") else ""
