"""`fgfem.pipeline`: stages in threads keep order, stay within their queues, stop on the first failure."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from fgfem.errors import FgfemError
from fgfem.pipeline import Pipeline, Stage, StageError, chain_stages, limited_threads


def _jitter(items: Iterator[int], seed: int, scale: float = 0.002) -> Iterator[int]:
    rng = random.Random(seed)
    for item in items:
        time.sleep(rng.random() * scale)
        yield item


def _pairs(items: Iterator[int]) -> Iterator[tuple[int, int]]:
    """A batching stage: two inputs per output, the odd one out at the end."""
    group: list[int] = []
    for item in items:
        group.append(item)
        if len(group) == 2:
            yield tuple(group)
            group = []
    if group:
        yield (group[0], -1)


def _stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fgfem-") and t.name.split("-")[1] in
            ("a", "b", "c", "slow", "boom", "tail")]


def test_threads_give_what_the_chain_gives_in_order() -> None:
    stages = [Stage("a", lambda s: _jitter(s, 1), 2), Stage("b", _pairs, 1),
              Stage("c", lambda s: ((x * 10, y) for x, y in _jitter(s, 2)), 3)]
    expected = list(chain_stages(range(101), stages))
    with Pipeline(range(101), stages) as running:
        assert list(running) == expected
    assert expected[0] == (0, 1) and expected[-1] == (1000, -1)
    assert not _stage_threads()


def test_queues_bound_how_far_the_source_runs_ahead() -> None:
    """At most sum(queue sizes) + one item per stage between the source and a slow consumer."""
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield i

    stages = [Stage("a", lambda s: s, 3), Stage("b", lambda s: s, 2), Stage("c", lambda s: s, 1)]
    lead = 0
    with Pipeline(source(), stages) as running:
        for consumed, _ in enumerate(running, start=1):
            time.sleep(0.001)
            lead = max(lead, pulled - consumed)
    assert 3 <= lead <= 3 + 2 + 1 + 3


@pytest.mark.parametrize("where", ["a", "b", "source"])
def test_the_first_failure_ends_the_run_in_one_line_naming_the_stage(where: str) -> None:
    def source() -> Iterator[int]:
        for i in range(10_000):
            if where == "source" and i == 7:
                raise OSError("disk\nvanished")
            yield i

    def failing(name: str):
        def run(items: Iterator[int]) -> Iterator[int]:
            for item in items:
                if where == name and item == 5:
                    raise RuntimeError("bad tensor\nsecond line")
                yield item
        return run

    stages = [Stage("a", failing("a"), 2), Stage("b", failing("b"), 2), Stage("tail", lambda s: s, 2)]
    seen: list[int] = []
    with pytest.raises(StageError) as caught, Pipeline(source(), stages) as running:
        seen.extend(running)
    message = str(caught.value)
    assert "\n" not in message
    assert (f"in the {'a' if where == 'source' else where} stage" in message)
    assert ("OSError: disk vanished" if where == "source" else "RuntimeError: bad tensor second line") in message
    assert isinstance(caught.value, FgfemError) and caught.value.__cause__ is not None
    assert seen == list(range(len(seen))) and len(seen) <= 7
    assert not _stage_threads()


def test_an_fgfem_error_passes_through_as_it_is() -> None:
    def run(items: Iterator[int]) -> Iterator[int]:
        for item in items:
            if item == 3:
                raise FgfemError("cannot write video out.mp4: disk full")
            yield item

    with pytest.raises(FgfemError, match="^cannot write video out.mp4: disk full$"), \
            Pipeline(range(100), [Stage("a", run, 1)]) as running:
        list(running)


def test_a_consumer_that_stops_early_stops_every_thread() -> None:
    def slow(items: Iterator[int]) -> Iterator[int]:
        for item in items:
            time.sleep(0.01)
            yield item

    with pytest.raises(KeyboardInterrupt), Pipeline(iter(range(10**9)), [Stage("slow", slow, 2)]) as running:
        for item in running:
            if item == 3:
                raise KeyboardInterrupt
    assert not _stage_threads()
    with Pipeline(iter(range(10**9)), [Stage("slow", slow, 2)]) as running:
        assert next(iter(running)) == 0
    assert not _stage_threads()


def test_limited_threads_restores_torch_threads() -> None:
    import torch

    before = torch.get_num_threads()
    with limited_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
