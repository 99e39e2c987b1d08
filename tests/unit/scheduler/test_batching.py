"""GroupCommit: what arrives together is applied together, in order; what arrives meanwhile goes in the next batch;
a failing batch is applied one item at a time, so only the faulty item's submitter sees the error."""

from __future__ import annotations

import asyncio

import pytest

from kiln.scheduler.batching import GroupCommit


class Store:
    """A fake apply: records each batch; fails any batch holding `bad`, and can hold a batch until released."""

    def __init__(self, bad: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.bad = bad
        self.held: asyncio.Event | None = None

    async def apply(self, items: list[str]) -> None:
        if self.held is not None:
            await self.held.wait()
        if self.bad in items:
            raise LookupError(f"{self.bad} is stale")
        self.batches.append(items)


async def test_items_of_one_pass_of_the_loop_are_one_batch_in_order() -> None:
    store = Store()
    batcher = GroupCommit(store.apply, "test")
    await asyncio.gather(*(batcher.submit(name) for name in "abcde"))
    assert store.batches == [list("abcde")]


async def test_a_lone_item_is_applied_at_once() -> None:
    store = Store()
    batcher = GroupCommit(store.apply, "test")
    await batcher.submit("a")
    await batcher.submit("b")
    assert store.batches == [["a"], ["b"]]


async def test_items_that_come_while_a_batch_is_applied_go_together_in_the_next() -> None:
    store = Store()
    store.held = asyncio.Event()
    batcher = GroupCommit(store.apply, "test")
    first = asyncio.ensure_future(batcher.submit("a"))
    await asyncio.sleep(0.01)  # "a" is being applied, held
    later = [asyncio.ensure_future(batcher.submit(name)) for name in "bcd"]
    await asyncio.sleep(0.01)
    assert store.batches == [] and not first.done()
    store.held.set()
    await asyncio.gather(first, *later)
    assert store.batches == [["a"], ["b", "c", "d"]]


async def test_a_failing_batch_is_applied_one_by_one_and_only_the_faulty_submitter_fails() -> None:
    store = Store(bad="c")
    batcher = GroupCommit(store.apply, "test")
    outcomes = await asyncio.gather(*(batcher.submit(name) for name in "abcd"), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "NoneType", "LookupError", "NoneType"]
    assert store.batches == [["a"], ["b"], ["d"]]


async def test_a_lone_items_error_reaches_its_submitter() -> None:
    batcher = GroupCommit(Store(bad="a").apply, "test")
    with pytest.raises(LookupError, match="a is stale"):
        await batcher.submit("a")


async def test_a_cancelled_submitter_does_not_stop_the_others() -> None:
    store = Store()
    store.held = asyncio.Event()
    batcher = GroupCommit(store.apply, "test")
    first = asyncio.ensure_future(batcher.submit("a"))
    await asyncio.sleep(0.01)
    gone, kept = asyncio.ensure_future(batcher.submit("b")), asyncio.ensure_future(batcher.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    store.held.set()
    await asyncio.gather(first, kept)
    assert store.batches == [["a"], ["b", "c"]]  # applied all the same: the submitter only stopped waiting


async def test_a_batch_that_follows_another_lingers_to_gather_the_stream() -> None:
    store = Store()
    store.held = asyncio.Event()
    batcher = GroupCommit(store.apply, "test", linger=0.5)
    first = asyncio.ensure_future(batcher.submit("a"))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(batcher.submit("b"))
    await asyncio.sleep(0)
    store.held.set()
    await first  # "b" waits for more: "c", which comes after "a" is applied, goes with it
    await asyncio.gather(second, batcher.submit("c"))
    assert store.batches == [["a"], ["b", "c"]]
