"""Load (issue 9): 20 modalities send a 64-slice series each at the same time.

Every copy of the real series gets its own Study, Series and SOP Instance UIDs, so the server sees
20 different series over 20 concurrent associations; every instance must be stored once and every
series analysed once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import create_engine, text

from tests.peers import copy_series, start_lungcds, storescu, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.load, pytest.mark.heavy]

COPIES = 20


@pytest.mark.timeout(1800)
def test_twenty_concurrent_series_are_each_stored_and_analysed_once(ct_dir: Path, tmp_path: Path) -> None:
    files = sorted(p for p in (ct_dir / "lung-dx-a0001-chest-5mm-s2").iterdir() if p.is_file())
    copies = [copy_series(files, tmp_path / "copies" / f"{n:02d}", f"LOAD{n:03d}") for n in range(COPIES)]
    uids = [str(pydicom.dcmread(c[0], stop_before_pixels=True).SeriesInstanceUID) for c in copies]
    server = start_lungcds(tmp_path / "lungcds", extra_env={"LUNGCDS_MAX_SLICE_THICKNESS_MM": "5"})
    try:
        with ThreadPoolExecutor(COPIES) as pool:
            sent = list(pool.map(lambda n: storescu(server.dicom_port, copies[n], calling=f"CT{n:02d}"), range(COPIES)))
        assert [r.returncode for r in sent] == [0] * COPIES, [r.stderr[-500:] for r in sent if r.returncode]

        def all_done() -> list[dict[str, Any]] | None:
            states = [server.series(uid) or {} for uid in uids]
            assert all(s.get("state") not in ("failed", "rejected") for s in states), states
            return states if all(s.get("state") == "done" for s in states) else None

        done = wait_for(all_done, 1800, 2.0, f"{COPIES} series analysed")
        assert [s["instance_count"] for s in done] == [len(files)] * COPIES
        assert [s["job"]["attempts"] for s in done] == [1] * COPIES
        engine = create_engine(f"sqlite:///{tmp_path / 'lungcds' / 'lungcds.db'}")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM instance")).scalar() == COPIES * len(files)
            assert conn.execute(text("SELECT count(*) FROM job")).scalar() == COPIES
        engine.dispose()
    finally:
        server.stop()
