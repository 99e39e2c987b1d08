"""The account's linked storage account (Batch's auto-storage): `autoStorageContainerName` resource files name
its containers. Nodes get a container URL with a read and list SAS made here, as Batch does; they never see
the account key.

`kiln serve --storage-connection-string` (or KILN_STORAGE_CONNECTION_STRING) links it; `UseDevelopmentStorage=true`
is Azurite's well-known account on its default port, and a full connection string names any other endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ENV = "KILN_STORAGE_CONNECTION_STRING"
#: How long a SAS made for a step is valid: a step is built when it is sent to its node, and its downloads
#: start at once (or when a slot frees, for a step sent ahead).
SAS_LIFETIME = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class AutoStorage:
    account_name: str
    account_key: str
    account_url: (
        str  #: the Blob endpoint, e.g. https://acct.blob.core.windows.net or http://127.0.0.1:10000/devstoreaccount1
    )

    @classmethod
    def from_connection_string(cls, connection_string: str) -> AutoStorage:
        """Parsed by azure-storage-blob itself, so every form it accepts works here; a bad one raises ValueError."""
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(connection_string)
        key = getattr(service.credential, "account_key", None)
        if not key or not service.account_name:
            raise ValueError("the storage connection string needs an AccountName and an AccountKey")
        return cls(service.account_name, key, service.url.rstrip("/"))

    def container_url(self, container: str, now: datetime | None = None) -> str:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        expiry = (now or datetime.now(UTC)) + SAS_LIFETIME
        sas = generate_container_sas(
            self.account_name,
            container,
            account_key=self.account_key,
            permission=ContainerSasPermissions(read=True, list=True),
            expiry=expiry,
        )
        return f"{self.account_url}/{container}?{sas}"
