"""End-to-end fixtures: a real `kiln serve` subprocess driven by the official azure-batch SDK."""

from kiln.testing_azurite import azurite  # noqa: F401
from kiln.testing_fixtures import (  # noqa: F401
    cleanup,
    client,
    marks_dir,
    open_base,
    open_tmp,
    pool,
    pytest_runtest_setup,  # tests marked root skip without it, or fail under KILN_TEST_REQUIRE_ROOT=1
    server,
)
from kiln.testing_netns import netns  # noqa: F401
