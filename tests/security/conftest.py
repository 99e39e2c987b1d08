"""A real `kiln serve` with its pool, as the end-to-end tests have it: the escapes are tried through it."""

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
