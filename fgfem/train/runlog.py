"""What a run shows and writes as it goes: the metrics log, the progress bar, TensorBoard, the stop signal.

Kept apart from the loop so that it reads as the training it does; nothing here changes
what is trained.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from fgfem.atomic import write_text

METRICS = "metrics.jsonl"


class MetricsLog:
    """``metrics.jsonl``: one JSON object per step, appended and flushed as we go.

    On resume the lines at or after the checkpoint's step (written by the interrupted run
    after its last save) and a torn last line are dropped first, atomically, so the log
    never holds a step twice.
    """

    def __init__(self, path: Path, *, keep_before: int) -> None:
        self.path = path
        kept = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError, TypeError, KeyError):
                    if json.loads(line)["step"] < keep_before:
                        kept.append(line + "\n")
        write_text(path, "".join(kept))
        self.handle = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics log of a run as a list of dicts (for tests, plots and model cards)."""
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Throughput:
    """Images per second, smoothed over recent steps (the first, warm-up step counts less)."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.last = time.perf_counter()
        self.rate = 0.0

    def update(self, images: int) -> float:
        now = time.perf_counter()
        current = images / max(now - self.last, 1e-9)
        self.last = now
        self.rate = current if self.rate == 0.0 else self.smoothing * self.rate + (1 - self.smoothing) * current
        return self.rate


class StopRequest:
    requested = False


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """SIGINT/SIGTERM ask the loop to finish its step, save and return; a second SIGINT aborts at once."""
    request = StopRequest()

    def ask(signum: int, frame: Any) -> None:
        if request.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.requested = True

    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: no handlers, training still works
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, ask)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ProgressBar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self.progress, self.task = progress, task

    def update(self, step: int, rate: float, terms: dict[str, float]) -> None:
        if self.progress is None or self.task is None:
            return
        shown = ("d_total", "g_total", "g_idt", "g_cyc")
        losses = " ".join(f"{k}={terms[k]:.3g}" for k in shown if k in terms)
        self.progress.update(self.task, completed=step, speed=rate, losses=losses)


@contextlib.contextmanager
def progress_bar(console: Console, total: int, done: int, *, enabled: bool) -> Iterator[ProgressBar]:
    if not enabled:
        yield ProgressBar(None, None)
        return
    progress = Progress(
        TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[speed]:.1f} img/s"),
        TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=console,
    )
    with progress:
        task = progress.add_task("train", total=total, completed=done, speed=0.0, losses="")
        yield ProgressBar(progress, task)


def tensorboard(run_dir: Path) -> Any:
    """A TensorBoard writer if the package is installed (it is optional), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
