"""A worker's first analysis before its first study: a small synthetic phantom, weight-free, reports included.

The first analysis of a process pays for what later ones find ready: libraries imported on first
use (highdicom's templates, reportlab and the embedded fonts, the JPEG 2000 encoder, SimpleITK's
filters), pydicom's dictionaries, the allocator's first pages.  On the 64-slice chest CT the first
``build_reports`` of a process took 2.58 s and later ones 1.74-1.99 s
(``benchmarks/end_to_end_latency.py``, issue 19 part 3), so the first study after a restart came
back later than the rest.  The worker runs one analysis at start instead, through the same
:func:`~server.services.analysis.run_analysis` a job takes, on a phantom of a few slices, with no
learned model (loading those is the ``"<model> weights"`` stage of a job, and may be freed after
it anyway), into a temporary folder that is removed after: nothing reaches the database, the
spool, a destination or the metrics.  A failure is logged and never stops the worker.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from models.phantom import chest_phantom, write_ct_series
from models.runtime import ModelProvider
from server.routing.rules import Eligibility
from server.services.analysis import run_analysis
from server.services.folder import scan_folder

__all__ = ["warm_up"]

logger = logging.getLogger(__name__)


def warm_up(ae_title: str) -> float | None:
    """Run one weight-free analysis of a small phantom, reports included; its seconds, or None when it failed."""
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="lungcds-warm-up-") as folder:
            root = Path(folder)
            phantom = chest_phantom(shape_zyx=(24, 96, 96), spacing_zyx=(5.0, 3.5, 3.5))
            write_ct_series(
                phantom,
                phantom.geometry,
                root / "series",
                patient_id="LUNGCDS-WARM-UP",
                patient_name="Warm-up^Phantom",
                patient_age="050Y",
                patient_sex="O",
                slice_thickness=5.0,
            )
            scan = scan_folder(root / "series")
            (items,) = scan.series.values()
            run_analysis(
                paths=[path for path, _ in items],
                out_dir=root / "out",
                eligibility=Eligibility(eligible=True, analysable=True, reasons=()),
                headers=[header for _, header in items],
                models=ModelProvider(None),
                ae_title=ae_title,
            )
    except Exception:  # noqa: BLE001 - a warm-up that fails must not keep the worker from its jobs
        logger.warning("worker warm-up failed; the first job pays for the first use instead", exc_info=True)
        return None
    seconds = time.perf_counter() - start
    logger.info("worker warmed up", extra={"seconds": round(seconds, 2)})
    return seconds
