"""The ``lungcds`` command line (``server.cli.main``).

Every process it starts (``serve``, ``worker``, ``analyze``) asks for huge pages for torch's large
allocations before anything allocates a tensor (:mod:`server.cli.allocator`); glibc's mapping
threshold is fixed when the process loads its first learned model (:mod:`models.memory`).
"""

from server.cli.allocator import configure_allocators

configure_allocators()
