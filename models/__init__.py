"""Pure compute for lungcds: volume loading, lung masking, measurements, networks, ``Findings``.

This package imports nothing else of the project (architecture spec, "Rooms").
"""

#: Version of the analysis pipeline; part of every job's idempotency key and of the
#: deterministic UIDs of our SR/SEG/PDF objects, so bump it whenever outputs change.
PIPELINE_VERSION = "0.5.0"

__all__ = ["PIPELINE_VERSION"]
