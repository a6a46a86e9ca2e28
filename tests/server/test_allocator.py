"""The command line's allocator set-up (``server.cli.allocator``): freed memory goes back at once.

Each case runs in a fresh interpreter, because glibc's malloc parameters are process-wide: it frees
a 16 MiB block first (which makes glibc's own dynamic threshold rise above 2 MiB), then holds 200
blocks of 2 MiB with a live heap block after them, frees the 200 and reports how much of their
resident memory went back to the kernel.
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
import json, sys
setup = "glibc's defaults"  # importing anything of server.cli would configure the allocators
if sys.argv[1] == "lungcds":
    import server.cli  # noqa: F401  (what every lungcds process does first)
    from server.cli.allocator import describe_allocators
    setup = describe_allocators()
import numpy as np

def resident_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

big = np.ones(16 * 2**20, dtype=np.uint8); del big  # a mapped block freed: glibc raises its threshold
before = resident_mb()
blocks = [np.ones(2 * 2**20, dtype=np.uint8) for _ in range(200)]
fence = np.ones(256 * 1024, dtype=np.uint8)  # a live heap block after them: the top cannot be trimmed
held = resident_mb()
del blocks
freed = resident_mb()
print(json.dumps({"held": held - before, "returned": held - freed, "setup": setup}))
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


def test_a_lungcds_process_returns_freed_blocks_of_a_few_megabytes_at_once() -> None:
    result = _probe("lungcds")
    assert float(result["held"]) > 350  # type: ignore[arg-type]
    assert float(result["returned"]) > 0.9 * float(result["held"]), result  # type: ignore[arg-type]
    assert "fixed at 128 KiB" in str(result["setup"])


def test_without_it_glibc_keeps_them_resident_so_the_probe_can_tell() -> None:
    result = _probe("plain")
    assert float(result["held"]) > 350  # type: ignore[arg-type]
    assert float(result["returned"]) < 0.5 * float(result["held"]), result  # type: ignore[arg-type]


def test_an_operators_threshold_in_the_environment_wins() -> None:
    result = _probe("lungcds", MALLOC_MMAP_THRESHOLD_=str(32 * 2**20))
    assert float(result["returned"]) < 0.5 * float(result["held"]), result  # type: ignore[arg-type]
    assert "from the environment" in str(result["setup"])
