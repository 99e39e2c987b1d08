"""Every operation of the Batch data plane, so a request for one Kiln lacks is told so by name.

From the SDKs' request builders: azure-batch 15.1 (api-version 2025-06-01) and, for the operations later
versions dropped (certificates, remote desktop files, lifetime statistics), azure-batch 9.x to 14.x.
Routes Kiln has answer first; this table only names what reaches no route.
"""

from __future__ import annotations

import re

from kiln.errors import KilnError

#: (method, path template, what it does)
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("GET", "/applications", "list applications"),
    ("GET", "/applications/{applicationId}", "get application"),
    ("GET", "/poolusagemetrics", "list pool usage metrics"),
    ("POST", "/pools", "create pool"),
    ("GET", "/pools", "list pools"),
    ("DELETE", "/pools/{poolId}", "delete pool"),
    ("HEAD", "/pools/{poolId}", "pool exists"),
    ("GET", "/pools/{poolId}", "get pool"),
    ("PATCH", "/pools/{poolId}", "update pool"),
    ("POST", "/pools/{poolId}/disableautoscale", "disable pool auto scale"),
    ("POST", "/pools/{poolId}/enableautoscale", "enable pool auto scale"),
    ("POST", "/pools/{poolId}/evaluateautoscale", "evaluate pool auto scale"),
    ("POST", "/pools/{poolId}/resize", "resize pool"),
    ("POST", "/pools/{poolId}/stopresize", "stop pool resize"),
    ("POST", "/pools/{poolId}/updateproperties", "replace pool properties"),
    ("POST", "/pools/{poolId}/removenodes", "remove nodes"),
    ("GET", "/supportedimages", "list supported images"),
    ("GET", "/nodecounts", "list pool node counts"),
    ("DELETE", "/jobs/{jobId}", "delete job"),
    ("GET", "/jobs/{jobId}", "get job"),
    ("PATCH", "/jobs/{jobId}", "update job"),
    ("PUT", "/jobs/{jobId}", "replace job"),
    ("POST", "/jobs/{jobId}/disable", "disable job"),
    ("POST", "/jobs/{jobId}/enable", "enable job"),
    ("POST", "/jobs/{jobId}/terminate", "terminate job"),
    ("POST", "/jobs", "create job"),
    ("GET", "/jobs", "list jobs"),
    ("GET", "/jobschedules/{jobScheduleId}/jobs", "list jobs from schedule"),
    ("GET", "/jobs/{jobId}/jobpreparationandreleasetaskstatus", "list job preparation and release task status"),
    ("GET", "/jobs/{jobId}/taskcounts", "get job task counts"),
    ("HEAD", "/jobschedules/{jobScheduleId}", "job schedule exists"),
    ("DELETE", "/jobschedules/{jobScheduleId}", "delete job schedule"),
    ("GET", "/jobschedules/{jobScheduleId}", "get job schedule"),
    ("PATCH", "/jobschedules/{jobScheduleId}", "update job schedule"),
    ("PUT", "/jobschedules/{jobScheduleId}", "replace job schedule"),
    ("POST", "/jobschedules/{jobScheduleId}/disable", "disable job schedule"),
    ("POST", "/jobschedules/{jobScheduleId}/enable", "enable job schedule"),
    ("POST", "/jobschedules/{jobScheduleId}/terminate", "terminate job schedule"),
    ("POST", "/jobschedules", "create job schedule"),
    ("GET", "/jobschedules", "list job schedules"),
    ("POST", "/jobs/{jobId}/tasks", "create task"),
    ("GET", "/jobs/{jobId}/tasks", "list tasks"),
    ("POST", "/jobs/{jobId}/addtaskcollection", "create task collection"),
    ("DELETE", "/jobs/{jobId}/tasks/{taskId}", "delete task"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}", "get task"),
    ("PUT", "/jobs/{jobId}/tasks/{taskId}", "replace task"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}/subtasksinfo", "list subtasks"),
    ("POST", "/jobs/{jobId}/tasks/{taskId}/terminate", "terminate task"),
    ("POST", "/jobs/{jobId}/tasks/{taskId}/reactivate", "reactivate task"),
    ("DELETE", "/jobs/{jobId}/tasks/{taskId}/files/{filePath}", "delete task file"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}/files/{filePath}", "download task file"),
    ("HEAD", "/jobs/{jobId}/tasks/{taskId}/files/{filePath}", "get task file properties"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}/files", "list task files"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/users", "create node user"),
    ("DELETE", "/pools/{poolId}/nodes/{nodeId}/users/{userName}", "delete node user"),
    ("PUT", "/pools/{poolId}/nodes/{nodeId}/users/{userName}", "replace node user"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}", "get node"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/reboot", "reboot node"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/start", "start node"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/reimage", "reimage node"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/deallocate", "deallocate node"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/disablescheduling", "disable node scheduling"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/enablescheduling", "enable node scheduling"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/remoteloginsettings", "get node remote login settings"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/uploadbatchservicelogs", "upload node logs"),
    ("GET", "/pools/{poolId}/nodes", "list nodes"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/extensions/{extensionName}", "get node extension"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/extensions", "list node extensions"),
    ("DELETE", "/pools/{poolId}/nodes/{nodeId}/files/{filePath}", "delete node file"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/files/{filePath}", "download node file"),
    ("HEAD", "/pools/{poolId}/nodes/{nodeId}/files/{filePath}", "get node file properties"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/files", "list node files"),
    ("POST", "/certificates", "create certificate"),
    ("GET", "/certificates", "list certificates"),
    (
        "POST",
        "/certificates(thumbprintAlgorithm={thumbprintAlgorithm},thumbprint={thumbprint})/canceldelete",
        "cancel certificate deletion",
    ),
    (
        "DELETE",
        "/certificates(thumbprintAlgorithm={thumbprintAlgorithm},thumbprint={thumbprint})",
        "delete certificate",
    ),
    ("GET", "/certificates(thumbprintAlgorithm={thumbprintAlgorithm},thumbprint={thumbprint})", "get certificate"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/rdp", "get node remote desktop file"),
    ("GET", "/lifetimejobstats", "get lifetime job statistics"),
    ("GET", "/lifetimepoolstats", "get lifetime pool statistics"),
)


def _pattern(template: str) -> re.Pattern[str]:
    """A template's path as a regex: {filePath} spans slashes, every other parameter one segment."""
    parts = re.split(r"(\{\w+\})", template)
    return re.compile(
        "".join(
            ".+" if part == "{filePath}" else "[^/]+" if part.startswith("{") else re.escape(part) for part in parts
        ),
        re.IGNORECASE,  # Batch's paths are case-insensitive
    )


_COMPILED = tuple((method, _pattern(template), name) for method, template, name in OPERATIONS)


def batch_operation(method: str, path: str) -> str | None:
    """What Batch operation a request is, or None for a method and path Batch does not have."""
    return next((name for verb, pattern, name in _COMPILED if verb == method.upper() and pattern.fullmatch(path)), None)


def not_implemented(operation: str, method: str, path: str) -> KilnError:
    """Batch's 501 NotImplemented, naming the operation."""
    return KilnError(
        f"Kiln does not implement the Batch operation '{operation}' ({method} {path}) yet; "
        "docs/compatibility.md lists what it has.",
        code="NotImplemented",
        status=501,
    )
