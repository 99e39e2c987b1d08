"""End-to-end fixtures: a real `kiln serve` subprocess driven by the official azure-batch SDK."""

from kiln.testing_azurite import azurite  # noqa: F401
from kiln.testing_fixtures import cleanup, client, marks_dir, open_base, open_tmp, pool, server  # noqa: F401
from kiln.testing_netns import netns  # noqa: F401
