"""How the processes of ``lungcds`` ask for memory: torch's huge pages, and when freed memory goes back.

**Huge pages for torch** (``THP_MEM_ALLOC_ENABLE=1``): c10 then advises the kernel
(``madvise(MADV_HUGEPAGE)``) on every allocation of 2 MB or more.  The networks' activations are
allocated and freed layer by layer, and each fresh 4 kB page costs a page fault; with 2 MB pages
there are about 20 times fewer (the first 3D DenseNet-201 pass on the CO-RADS input, on a loaded
2-core machine: 3.9 M faults and 15.6 s of system time without, 0.19 M and 10.0 s with; the whole
pipeline: ``benchmarks/README.md``).  Where the kernel's THP mode is ``never`` it changes nothing.
It must be set before torch makes its first allocation, so the command line's package applies it
when it is imported (``server/cli/__init__.py``); an operator's own setting wins.

**glibc's mapping threshold** is left as glibc sets it until the process loads its first learned
model, and fixed at 128 KiB from then on (:mod:`models.memory`, called by the model provider).
"""

from __future__ import annotations

import os

from models.memory import describe_heap_policy

__all__ = ["configure_allocators", "describe_allocators"]


def configure_allocators() -> None:
    """Ask torch for huge pages unless the environment already says otherwise (idempotent)."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def describe_allocators() -> str:
    """The settings in effect, in words (benchmarks print it beside their figures)."""
    return f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}, {describe_heap_policy()}"
