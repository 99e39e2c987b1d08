"""How long a slow dispatch lasts: a number of steps, or a time."""

from __future__ import annotations

import time

from kiln.scheduler.faults import Slow


def test_a_slow_dispatch_of_n_steps_takes_n_and_is_then_spent() -> None:
    slow = Slow(delay=2, stimulus="request", steps=2)
    assert (slow.takes(), slow.spent()) == (True, False)
    assert (slow.takes(), slow.spent()) == (True, True)
    assert slow.takes() is False


def test_a_slow_dispatch_for_a_while_takes_every_step_until_then() -> None:
    lasting = Slow(delay=2, stimulus="request", until=time.monotonic() + 3600)
    assert all(lasting.takes() for _ in range(100)) and not lasting.spent()
    over = Slow(delay=2, stimulus="request", until=time.monotonic() - 1)
    assert (over.takes(), over.spent()) == (False, True)
