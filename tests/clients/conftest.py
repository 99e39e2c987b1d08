"""The client matrix runs against the session's shared server; its output files go to the session's Azurite."""

from kiln.testing_azurite import azurite  # noqa: F401
from kiln.testing_fixtures import open_base, server  # noqa: F401
