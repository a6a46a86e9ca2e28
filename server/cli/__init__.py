"""The ``lungcds`` command line (``server.cli.main``).

Every process it starts (``serve``, ``worker``, ``analyze``) sets up its memory allocators before
anything imports torch (:mod:`server.cli.allocator`: huge pages for torch's large allocations, a
fixed mapping threshold for glibc's malloc, so that a freed model's memory goes back at once).
"""

from server.cli.allocator import configure_allocators

configure_allocators()
