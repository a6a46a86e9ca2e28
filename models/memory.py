"""When freed memory goes back to the kernel: kept for reuse until a learned model is loaded, at once after.

glibc's malloc gives each block of at least its *mapping threshold* a mapping of its own, returned
to the kernel when freed, and serves smaller ones from heaps that keep freed memory for reuse.  It
starts at 128 KiB and raises the threshold (up to 32 MiB) each time a mapped block is freed.  The
two kinds of work of a ``lungcds`` process want opposite settings:

* **Weight-free analysis** (lung mask, measurements, reports: numpy on whole volumes and slice by
  slice) allocates and frees the same blocks of a few MB again and again.  glibc's rising threshold
  serves them from the heap; a threshold fixed at 128 KiB maps and faults each one in afresh: on the
  64-slice chest CT the classical lung mask took 2.06 s instead of 1.53 s (``benchmarks/lung_mask.py``,
  medians of 5; about 254,000 page faults per run instead of 13,000), most of the difference in
  ``benchmarks/end_to_end_latency.py`` (issue 19 part 3; ``benchmarks/README.md``).
* **Learned models** on the CPU are freed after their stage (:meth:`models.runtime.ModelProvider.release`).
  With a rising threshold their weight tensors of a few MB come from the heaps and stay resident
  when freed, and the next stage's activations were mapped on top of them: the full pipeline peaked
  at 5303 MB instead of 3197 MB with the threshold fixed at 128 KiB (``benchmarks/full_pipeline.py``).

So a process keeps glibc's own behaviour until it loads its first learned model; then
:func:`return_freed_memory_at_once` fixes the threshold at 128 KiB for the rest of its life and
returns what the heaps hold free so far (``malloc_trim``).  A weight-free installation never pays
the page faults; a worker with models keeps within its memory bound.  An operator's own threshold
(``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...``) always wins.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

__all__ = ["MMAP_THRESHOLD_BYTES", "describe_heap_policy", "return_freed_memory_at_once"]

#: glibc's own initial threshold, kept fixed once learned models run instead of adjusted upwards.
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # <malloc.h>
_switch = threading.Lock()
_switched = False


def return_freed_memory_at_once() -> None:
    """From now on, every freed block of 128 KiB or more goes back to the kernel (once per process; glibc only)."""
    global _switched
    with _switch:
        if _switched or not _is_glibc() or _operator_set_mmap_threshold():
            return
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.malloc_trim(0)
        _switched = True


def describe_heap_policy() -> str:
    """The policy in effect in this process, in words (benchmarks print it beside their figures)."""
    if _operator_set_mmap_threshold():
        return "malloc mapping threshold from the environment"
    if not _is_glibc():
        return "not glibc: its allocator's defaults"
    if _switched:
        return f"malloc mapping threshold fixed at {MMAP_THRESHOLD_BYTES // 1024} KiB (a learned model was loaded)"
    return "glibc's rising malloc mapping threshold (no learned model loaded yet)"


def _is_glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"


def _operator_set_mmap_threshold() -> bool:
    """Whether glibc was told its mapping threshold at start (``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES``)."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")
