"""A real `kiln serve` with its pool, as the end-to-end tests have it: the escapes are tried through it."""

from kiln.testing_fixtures import cleanup, client, marks_dir, open_base, open_tmp, pool, server  # noqa: F401
