"""The client matrix runs against the session's shared server."""

from kiln.testing_fixtures import open_base, server  # noqa: F401
