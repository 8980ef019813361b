"""Stages of a stream, each in its own thread, joined by small bounded queues.

Why: a video render is decode -> track -> model -> compose -> encode. Run one after the
other in one thread, every stage waits for all the others, and on 2 cores one core idles
while the tracker or numpy holds the other. torch and numpy release the GIL inside their
kernels and ffmpeg runs in its own processes, so plain threads overlap the stages; a
bounded queue after each stage keeps memory flat whatever the stream's length.

A stage is a generator transform (``Iterator[In] -> Iterator[Out]``), so the same stages
chained in one thread (``chain_stages``) are the sequential path, item for item: running
them in threads changes when the work happens, never what it computes or in which order.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from fgfem.errors import FgfemError

POLL_S = 0.05
"""How often a thread blocked on a queue looks at the stop flag (bounds how long a failure takes to end a run)."""
JOIN_S = 60.0
"""How long closing waits for a stage that is still inside a computation (a model batch) before giving up."""

_END = object()


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline: a generator transform and how many of its outputs may wait for the next step."""

    name: str
    run: Callable[[Iterator[Any]], Iterator[Any]]
    queue_size: int = 1


class StageError(FgfemError):
    """A stage raised something that is not an ``FgfemError``: named by stage, on one line."""


def chain_stages(source: Iterable[Any], stages: Sequence[Stage]) -> Iterator[Any]:
    """The stages applied one after the other in the calling thread (the sequential path)."""
    stream: Iterator[Any] = iter(source)
    for stage in stages:
        stream = stage.run(stream)
    return stream


def one_line(problem: BaseException) -> str:
    """``Type: message`` with every run of whitespace (newlines included) made one space."""
    text = " ".join(str(problem).split())
    return f"{type(problem).__name__}: {text}" if text else type(problem).__name__


class Pipeline:
    """Run ``stages`` over ``source`` concurrently; iterate it for the last stage's outputs, in order.

    Each stage is one thread, so each sees its inputs in order and order is kept end to
    end. The first exception in any stage stops every thread and is raised by the
    iteration (an ``FgfemError`` as it is, anything else as a one-line ``StageError``
    naming the stage, with the original as its cause). Leaving the ``with`` block, or
    ``close()``, stops and joins the threads however early the caller stops; at most
    ``sum(queue_size)`` items plus one in each stage's hands exist at any time.
    """

    def __init__(self, source: Iterable[Any], stages: Sequence[Stage]) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = list(stages)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._failure: tuple[str, BaseException] | None = None
        self._queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=max(1, s.queue_size)) for s in self.stages]
        self._threads: list[threading.Thread] = []
        inputs: list[Callable[[], Iterator[Any]]] = [lambda: iter(source)]
        inputs += [lambda q=q: self._drain(q) for q in self._queues[:-1]]
        for stage, make_input, out in zip(self.stages, inputs, self._queues, strict=True):
            thread = threading.Thread(target=self._work, args=(stage, make_input, out),
                                      name=f"fgfem-{stage.name}", daemon=True)
            self._threads.append(thread)
        self._started = False
        self._done = False

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Pipeline:
        """Start every stage's thread (iteration and ``__enter__`` do it)."""
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        return self

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop every stage and join its thread (idempotent)."""
        self._done = True
        self._stop.set()
        for q in self._queues:
            _empty(q)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=JOIN_S)

    # -- the consumer -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        self.start()
        last = self._queues[-1]
        try:
            while not self._done:
                self._raise_if_failed()
                try:
                    item = last.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if item is _END:
                    self._raise_if_failed()
                    self._done = True
                    break
                yield item
        finally:
            self.close()

    def _raise_if_failed(self) -> None:
        if self._failure is None:
            return
        name, problem = self._failure
        if isinstance(problem, FgfemError):
            raise problem
        raise StageError(f"render stopped in the {name} stage: {one_line(problem)}") from problem

    # -- the stages -------------------------------------------------------------------------------
    def _work(self, stage: Stage, make_input: Callable[[], Iterator[Any]], out: queue.Queue[Any]) -> None:
        """One stage's thread: its outputs into ``out``, then the end marker; the first failure stops all."""
        try:
            for item in stage.run(make_input()):
                if not self._put(out, item):
                    return
            self._put(out, _END)
        except BaseException as problem:  # noqa: BLE001 - reported to the consumer, which raises it
            with self._lock:
                if self._failure is None and not self._stop.is_set():
                    self._failure = (stage.name, problem)
            self._stop.set()

    def _put(self, out: queue.Queue[Any], item: Any) -> bool:
        """Put ``item`` unless the pipeline stops first (a full queue is retried every ``POLL_S``)."""
        while not self._stop.is_set():
            try:
                out.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _drain(self, source: queue.Queue[Any]) -> Iterator[Any]:
        """The previous stage's outputs until its end marker; stops quietly when the pipeline stops."""
        while not self._stop.is_set():
            try:
                item = source.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item


def _empty(q: queue.Queue[Any]) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            q.get_nowait()


def default_compute_threads() -> int:
    """torch intra-op threads for a pipelined run: half the cores, at least one.

    Why: every stage that calls torch gets its own OpenMP team; with 2 cores, 2 threads in
    each of 3 concurrent stages oversubscribe and spin at barriers (measured several
    times slower under load), while the stages themselves already fill the cores.
    """
    return max(1, (os.cpu_count() or 1) // 2)


@contextlib.contextmanager
def limited_threads(torch_threads: int) -> Iterator[None]:
    """torch intra-op threads set to ``torch_threads`` and the BLAS of numpy to 1 inside the block.

    Why BLAS: numpy's OpenBLAS threads and torch's OpenMP threads contend; a 106 x 106
    ``np.linalg.solve`` (the rig's field fit) measured 0.06 ms alone and ~100 ms after a
    torch op on the 2-core machine, unless OpenBLAS runs one thread. The matrices of a
    render are small, so one BLAS thread loses nothing.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(torch_threads)))
    try:
        with blas_single_thread():
            yield
    finally:
        torch.set_num_threads(previous)


def blas_single_thread() -> contextlib.AbstractContextManager[object]:
    """numpy's BLAS limited to one thread inside the block (the rig's small solves, a render).

    The controller that finds the BLAS libraries is made once: entering a limit through it
    costs microseconds, where ``threadpool_limits`` rescans the loaded libraries every time.
    """
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional at run time: without it BLAS keeps its own thread count
        return None
    return ThreadpoolController()
