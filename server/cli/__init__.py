"""The ``lungcds`` command line (``server.cli.main``).

Every process it starts (``serve``, ``worker``, ``analyze``) asks torch's CPU allocator for
transparent huge pages, unless the environment already says otherwise: ``THP_MEM_ALLOC_ENABLE=1``
makes c10 advise the kernel (``madvise(MADV_HUGEPAGE)``) on every allocation of 2 MB or more.
The networks' activations are allocated and freed layer by layer, and each fresh 4 kB page costs a
page fault; with 2 MB pages there are about 20 times fewer (the first 3D DenseNet-201 pass on the
CO-RADS input, measured on a loaded 2-core machine: 3.9 M faults and 15.6 s of system time without,
0.19 M and 10.0 s with; the whole pipeline: ``benchmarks/README.md``).  c10 reads the variable
once, at torch's first allocation, so it is set here, before anything imports torch.  Where the
kernel's THP mode is ``never`` it changes nothing.
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
