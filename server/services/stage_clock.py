"""Where an analysis spends its time and memory: wall time, CPU time and peak resident memory per stage.

An operator sizing a CPU node needs to know which stage (loading, the lung mask, each model, the
reports) takes the time and which one sets the memory peak; three coarse timings do not say.

Peak memory per stage
---------------------
The kernel keeps one high-water mark of resident memory per process (``VmHWM`` in
``/proc/self/status``).  Writing ``5`` to ``/proc/self/clear_refs`` resets it to the current
resident size (Linux 4.0 and later, ``proc(5)``), so resetting it when a stage starts and reading it
when it ends gives that stage's exact peak, with no sampling thread that could miss a short spike.
Where the file cannot be written (not Linux, a locked-down container) the peak is ``None``, never a
guess.  The reset also lowers what ``getrusage(RUSAGE_SELF).ru_maxrss`` reports for this process
afterwards (the kernel takes the larger of the recorded maximum and the current high-water mark),
which Celery's ``worker_max_memory_per_child`` reads after each task: with stage peaks measured it
compares the last stage's peak, at least the memory the task left behind, with the limit.

CPU time is ``time.process_time()``: every thread of the process, so torch's intra-op threads
count, and a CPU time above the wall time shows the stage ran in parallel.

Network forward time
--------------------
While the clock runs, global torch module hooks (``register_module_forward_pre_hook`` and
``register_module_forward_hook``) time every outermost module call of the analysing thread: the
seconds inside the networks' forward passes and how many there were (a sliding window makes one
per patch).  The rest of a model's stage is its pre- and post-processing (resampling, patch
extraction and stitching, post-processing of masks), so the two are told apart without touching
any model's code.  Nested modules are counted once, through the outermost call.

Stages with one name
--------------------
The pipeline returns to a stage after loading a model's weights (``"<model> weights"`` is a stage
of its own), so a stage may run in several intervals; they are added up into one entry per name
(``intervals`` says how many), so that every stage appears once in ``result.json``, the timeline
and the metrics.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch.utils.hooks import RemovableHandle

__all__ = ["Stage", "StageClock", "peak_rss_bytes", "reset_peak_rss"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's resident-memory high-water mark to its current size; False where impossible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    """This process's resident-memory high-water mark (``VmHWM``) in bytes; None where unknown."""
    try:
        status = _STATUS.read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # the kernel prints kB
    return None


@dataclass(frozen=True)
class Stage:
    """One stage of an analysis (loading, each model and its weights, reports): when, and what it cost.

    ``seconds`` and ``cpu_seconds`` add up the stage's ``intervals``; ``peak_rss_bytes`` is the
    process's peak resident memory during it (None where the high-water mark cannot be reset, see
    the module docstring); ``forward_seconds`` and ``forward_calls`` are the networks' forward
    passes within it.
    """

    name: str
    started_at: datetime
    ended_at: datetime
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int | None
    forward_seconds: float = 0.0
    forward_calls: int = 0
    intervals: int = 1

    def merged(self, later: Stage) -> Stage:
        """This stage and a later interval of it as one."""
        peaks = [p for p in (self.peak_rss_bytes, later.peak_rss_bytes) if p is not None]
        return replace(
            self,
            ended_at=later.ended_at,
            seconds=self.seconds + later.seconds,
            cpu_seconds=self.cpu_seconds + later.cpu_seconds,
            peak_rss_bytes=max(peaks) if peaks else None,
            forward_seconds=self.forward_seconds + later.forward_seconds,
            forward_calls=self.forward_calls + later.forward_calls,
            intervals=self.intervals + later.intervals,
        )

    def as_dict(self) -> dict[str, object]:
        """The stage as result.json and the job timeline carry it."""
        return {
            "name": self.name,
            "started_at": self.started_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "peak_rss_mb": None if self.peak_rss_bytes is None else round(self.peak_rss_bytes / 2**20, 1),
            "forward_seconds": round(self.forward_seconds, 3),
            "forward_calls": self.forward_calls,
            "intervals": self.intervals,
        }


class _ForwardTimer:
    """Seconds and number of the outermost module calls of one thread, through global torch hooks."""

    def __init__(self) -> None:
        self._thread = threading.get_ident()
        self._depth = 0
        self._entered = 0.0
        self.seconds = 0.0
        self.calls = 0
        self._handles: list[RemovableHandle] = [
            torch.nn.modules.module.register_module_forward_pre_hook(self._before),
            torch.nn.modules.module.register_module_forward_hook(self._after, always_call=True),
        ]

    def _before(self, _module: torch.nn.Module, _inputs: object) -> None:
        if threading.get_ident() != self._thread:
            return
        if self._depth == 0:
            self._entered = time.perf_counter()
        self._depth += 1

    def _after(self, _module: torch.nn.Module, _inputs: object, _output: object) -> None:
        if threading.get_ident() != self._thread or self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._entered
            self.calls += 1

    def take(self) -> tuple[float, int]:
        """Seconds and calls since the last take (a forward that raised counts: the end hook always runs)."""
        taken = (self.seconds, self.calls)
        self.seconds, self.calls, self._depth = 0.0, 0, 0
        return taken

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


class StageClock:
    """Turns the pipeline's progress callbacks into stages with their wall and CPU time, peak memory and
    network forward time (see the module docstring); :meth:`close` must be called to remove the hooks."""

    def __init__(self) -> None:
        self._done: dict[str, Stage] = {}
        self._current: tuple[str, datetime, float, float, bool] | None = None
        self._forward: _ForwardTimer | None = None

    def enter(self, name: str) -> None:
        """Start ``name`` (ending the running stage) unless it is the running one."""
        if self._current is not None and self._current[0] == name:
            return
        self._end()
        if self._forward is None:
            self._forward = _ForwardTimer()
        self._forward.take()
        self._current = (name, datetime.now(UTC), time.perf_counter(), time.process_time(), reset_peak_rss())

    def close(self) -> list[Stage]:
        """End the running stage and stop timing forward passes; every stage so far, in order of first entry."""
        self._end()
        if self._forward is not None:
            self._forward.remove()
            self._forward = None
        return list(self._done.values())

    def _end(self) -> None:
        if self._current is None:
            return
        name, started, wall, cpu, peak_known = self._current
        forward_seconds, forward_calls = self._forward.take() if self._forward is not None else (0.0, 0)
        interval = Stage(
            name,
            started,
            datetime.now(UTC),
            time.perf_counter() - wall,
            time.process_time() - cpu,
            peak_rss_bytes() if peak_known else None,
            forward_seconds,
            forward_calls,
        )
        earlier = self._done.get(name)
        self._done[name] = interval if earlier is None else earlier.merged(interval)
        self._current = None
