"""Per-stage wall time, CPU time and peak resident memory (issue 19, part 2)."""

from __future__ import annotations

import mmap
import threading
import time

import pytest
import torch

from server.services.stage_clock import StageClock, peak_rss_bytes, reset_peak_rss

MB = 2**20


def _busy(cpu_seconds: float) -> None:
    """Spin until this process has used ``cpu_seconds`` more CPU (however busy the machine is)."""
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_each_stage_gets_its_own_peak_memory_and_its_cpu_time() -> None:
    if not reset_peak_rss() or peak_rss_bytes() is None:
        pytest.skip("this kernel does not let a process reset its peak resident memory (/proc/self/clear_refs)")
    clock = StageClock()

    clock.enter("allocates")
    # A mapping of its own, touched (resident) and unmapped: malloc could serve a block this size
    # from memory its heaps already hold resident, which would not raise the peak at all.
    with mmap.mmap(-1, 300 * MB) as block:
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
    clock.enter("allocates")  # the running stage: nothing changes
    clock.enter("waits")
    time.sleep(0.3)
    clock.enter("computes")
    _busy(0.3)
    allocates, waits, computes = clock.close()

    assert [s.name for s in (allocates, waits, computes)] == ["allocates", "waits", "computes"]
    assert allocates.peak_rss_bytes is not None and waits.peak_rss_bytes is not None
    assert allocates.peak_rss_bytes - waits.peak_rss_bytes > 250 * MB, "the peak was reset when 'waits' began"
    assert waits.seconds >= 0.3 and waits.cpu_seconds < 0.1, "sleeping takes wall time, not CPU"
    assert computes.cpu_seconds >= 0.3 and computes.seconds >= 0.3 * 0.99
    assert allocates.ended_at <= waits.started_at <= waits.ended_at <= computes.started_at
    assert clock.close() == [allocates, waits, computes], "closing again adds nothing"


def test_a_stage_entered_again_is_one_stage_of_several_intervals() -> None:
    clock = StageClock()
    for name in ("stoic", "stoic_simonj weights", "stoic", "stoic_hal9000 weights", "stoic", "reports"):
        clock.enter(name)
        _busy(0.01)
    stages = clock.close()

    assert [(s.name, s.intervals) for s in stages] == [
        ("stoic", 3),
        ("stoic_simonj weights", 1),
        ("stoic_hal9000 weights", 1),
        ("reports", 1),
    ]
    stoic = stages[0]
    assert stoic.cpu_seconds >= 0.03 and stoic.seconds < (stoic.ended_at - stoic.started_at).total_seconds()
    as_json = stoic.as_dict()
    assert set(as_json) == {
        "name",
        "started_at",
        "seconds",
        "cpu_seconds",
        "peak_rss_mb",
        "forward_seconds",
        "forward_calls",
        "intervals",
    }
    assert as_json["intervals"] == 3 and as_json["seconds"] == round(stoic.seconds, 3)


def test_network_forward_passes_are_timed_once_each_and_only_for_the_analysing_thread() -> None:
    network = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(64, 8)))
    batch = torch.ones(4, 64)
    clock = StageClock()
    clock.enter("preprocess only")
    _busy(0.02)
    clock.enter("model")
    with torch.inference_mode():
        network(batch)
        network(batch)  # two outermost calls; the nested modules are not counted again
        elsewhere = threading.Thread(target=network, args=(batch,))
        elsewhere.start()
        elsewhere.join()
    failing = torch.nn.Linear(3, 3)
    with pytest.raises(RuntimeError):
        failing(torch.ones(2, 5))  # raises inside its forward: timed and counted, nothing left half-open
    network(batch)
    before, model = clock.close()

    assert (before.forward_calls, before.forward_seconds) == (0, 0.0)
    assert model.forward_calls == 4 and 0 < model.forward_seconds <= model.seconds
    network(batch)  # after close the hooks are gone: a new clock starts from nothing
    again = StageClock()
    again.enter("idle")
    (idle,) = again.close()
    assert idle.forward_calls == 0
