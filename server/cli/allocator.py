"""How the processes of ``lungcds`` ask for memory: torch's huge pages and glibc's mapping threshold.

Both are process-wide and must be set before torch makes its first allocation, so the command
line's package applies them when it is imported (``server/cli/__init__.py``).  An operator's own
setting in the environment always wins.

**Huge pages for torch** (``THP_MEM_ALLOC_ENABLE=1``): c10 then advises the kernel
(``madvise(MADV_HUGEPAGE)``) on every allocation of 2 MB or more.  The networks' activations are
allocated and freed layer by layer, and each fresh 4 kB page costs a page fault; with 2 MB pages
there are about 20 times fewer (the first 3D DenseNet-201 pass on the CO-RADS input, on a loaded
2-core machine: 3.9 M faults and 15.6 s of system time without, 0.19 M and 10.0 s with; the whole
pipeline: ``benchmarks/README.md``).  Where the kernel's THP mode is ``never`` it changes nothing.

**A fixed mapping threshold for glibc's malloc** (``mallopt(M_MMAP_THRESHOLD, 128 KiB)``): every
block of 128 KiB or more gets its own mapping and goes back to the kernel when it is freed.  glibc
starts with that threshold but raises it (up to 32 MiB) each time a mapped block is freed, after
which blocks of a few MB, most of a network's weight tensors among them, come from its heaps and
stay resident when freed.  A CPU worker frees each model after its stage (``ModelProvider``), and
the next stage's activations were then mapped on top of the freed weights: the full pipeline peaked
at the sum of both.  With the threshold fixed, freeing a model returns its memory at once, with no
call into the allocator while analyses run (``malloc_trim`` before each model load did this job
before, at each load only; figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["MMAP_THRESHOLD_BYTES", "configure_allocators", "describe_allocators"]

#: glibc's own initial threshold, kept fixed instead of adjusted upwards.
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def configure_allocators() -> None:
    """Apply both settings unless the environment already sets them (idempotent)."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if platform.libc_ver()[0] != "glibc" or _operator_set_mmap_threshold():
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def describe_allocators() -> str:
    """The settings in effect, in words (benchmarks print it beside their figures)."""
    if _operator_set_mmap_threshold():
        threshold = "malloc mapping threshold from the environment"
    elif platform.libc_ver()[0] == "glibc":
        threshold = f"malloc mapping threshold fixed at {MMAP_THRESHOLD_BYTES // 1024} KiB"
    else:
        threshold = "not glibc: its allocator's defaults"
    return f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}, {threshold}"


def _operator_set_mmap_threshold() -> bool:
    """Whether glibc was told its mapping threshold at start (``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES``)."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")
