"""When a ``lungcds`` process gives freed memory back (``models.memory``, ``server.cli.allocator``).

Each case runs in a fresh interpreter, because glibc's malloc parameters are process-wide.  The
probe frees a 16 MiB block first (which makes glibc's own threshold rise above 2 MiB), then holds
200 blocks of 2 MiB, each followed by a small live block, frees the 200 and reports how much of
their resident memory went back to the kernel: kept for reuse before the process loads a learned
model, returned at once after it, and what the heaps held free when the model was loaded is
returned too.  It also reports how much of the 200 glibc gave mappings of their own (``mapped``,
from ``mallinfo2``): that is the policy itself, whatever the layout of the heap.

A small live block after *every* block, not one after all of them: a single fence can land in a
free hole lower in the heap, and then the 200 are the top of the heap, which glibc trims when they
are freed whatever its threshold (a full test run once saw this in the cases where they should stay).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tests.peers import PROJECT_ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the mapping threshold is glibc's")

PROBE = """
import ctypes, json, sys
import server.cli  # noqa: F401  (what every lungcds process does first)
from server.cli.allocator import describe_allocators
import numpy as np
import torch
from models.runtime import ModelProvider  # imported before measuring: its libraries are resident too

def resident_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2

def mapped_mb():
    return mallinfo2().hblkhd / 2**20

def load_a_model():
    provider = ModelProvider(None, demo_weights=True, demo_factories={"lobes": lambda: torch.nn.Linear(2, 2)})
    assert provider.load("lobes") is not None

def hold_and_free():
    before, mapped_before = resident_mb(), mapped_mb()
    blocks, fences = [], []
    for _ in range(200):
        blocks.append(np.ones(2 * 2**20, dtype=np.uint8))
        fences.append(np.ones(16 * 1024, dtype=np.uint8))  # live after it: the heap's top cannot be trimmed
    held, mapped = resident_mb(), mapped_mb() - mapped_before
    del blocks
    return before, held, resident_mb(), mapped, fences

big = np.ones(16 * 2**20, dtype=np.uint8); del big  # a mapped block freed: glibc raises its threshold
figures = {"setup_at_start": describe_allocators()}
if sys.argv[1] == "kept-then-returned-at-load":
    before, held, freed, mapped, fences = hold_and_free()
    load_a_model()
    figures.update(held=held - before, mapped=mapped, returned=held - freed, returned_at_load=freed - resident_mb())
else:
    if sys.argv[1] == "after-a-model":
        load_a_model()
    before, held, freed, mapped, fences = hold_and_free()
    figures.update(held=held - before, mapped=mapped, returned=held - freed)
figures["setup"] = describe_allocators()
print(json.dumps(figures))
"""


def _probe(mode: str, **env: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        env=environment,
        cwd=PROJECT_ROOT,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _figure(result: dict[str, object], key: str) -> float:
    return float(result[key])  # type: ignore[arg-type]


def test_before_any_learned_model_freed_blocks_stay_for_reuse() -> None:
    result = _probe("weight-free")
    assert _figure(result, "held") > 350
    assert _figure(result, "mapped") < 0.5 * _figure(result, "held"), result
    assert _figure(result, "returned") < 0.5 * _figure(result, "held"), result
    assert "rising" in str(result["setup"]) and "THP_MEM_ALLOC_ENABLE=1" in str(result["setup"])


def test_after_a_learned_model_is_loaded_freed_blocks_go_back_at_once() -> None:
    result = _probe("after-a-model")
    assert _figure(result, "held") > 350
    assert _figure(result, "mapped") > 0.9 * _figure(result, "held"), result
    assert _figure(result, "returned") > 0.9 * _figure(result, "held"), result
    assert "rising" in str(result["setup_at_start"])
    assert "fixed at 128 KiB" in str(result["setup"])


def test_loading_the_first_model_returns_what_the_heaps_held_free() -> None:
    result = _probe("kept-then-returned-at-load")
    assert _figure(result, "mapped") < 0.5 * _figure(result, "held"), result
    assert _figure(result, "returned") < 0.5 * _figure(result, "held"), result
    assert _figure(result, "returned") + _figure(result, "returned_at_load") > 0.9 * _figure(result, "held"), result


def test_an_operators_threshold_in_the_environment_wins() -> None:
    result = _probe("after-a-model", MALLOC_MMAP_THRESHOLD_=str(32 * 2**20))
    assert _figure(result, "mapped") < 0.5 * _figure(result, "held"), result
    assert _figure(result, "returned") < 0.5 * _figure(result, "held"), result
    assert "from the environment" in str(result["setup"])
