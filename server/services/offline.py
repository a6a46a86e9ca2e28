"""``lungcds analyze`` (offline, no network) and ``lungcds import`` (into a server's spool)."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dicom_node.spool import OutOfResources, Spool
from dicom_node.validation import InvalidInstance
from server.core.config import Settings
from server.core.db import make_engine, upgrade
from server.routing.intake import SeriesIntake
from server.routing.rules import Eligibility, evaluate, rules_in_force
from server.services.analysis import run_analysis, write_result_json
from server.services.folder import candidate_files, scan_folder

__all__ = ["EXIT_DONE", "EXIT_ERROR", "EXIT_INELIGIBLE", "analyze_folder", "import_into_server"]

logger = logging.getLogger(__name__)

EXIT_DONE, EXIT_ERROR, EXIT_INELIGIBLE = 0, 1, 2


def analyze_folder(
    settings: Settings,
    dicom_dir: Path,
    out_dir: Path,
    *,
    series_uid: str | None,
    demo_weights: bool,
    console: Console,
) -> int:
    """Analyse one series folder and write the contract's output files; the exit code."""
    try:
        scan = scan_folder(dicom_dir)
    except NotADirectoryError as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_ERROR
    for path, reason in scan.refused:
        console.print(f"[yellow]refused[/] {path.name}: {reason}")
    if not scan.series:
        console.print(f"[red]error:[/] no valid DICOM instance in {dicom_dir}")
        return EXIT_ERROR
    if series_uid is None and len(scan.series) > 1:
        console.print(f"[red]error:[/] {dicom_dir} holds {len(scan.series)} series; choose one with --series:")
        for uid, items in scan.series.items():
            console.print(f"  {uid} ({len(items)} instances)")
        return EXIT_ERROR
    uid = series_uid or next(iter(scan.series))
    if uid not in scan.series:
        console.print(f"[red]error:[/] series {uid} is not in {dicom_dir}")
        return EXIT_ERROR
    paths = [p for p, _ in scan.series[uid]]
    headers = [h for _, h in scan.series[uid]]
    in_force = rules_in_force(settings.rules_file, settings.max_slice_thickness_mm)
    if in_force.error is not None:
        console.print(f"[yellow]warning:[/] {in_force.error}; using the {in_force.source}")
    eligibility = evaluate(headers, in_force.rules)
    if not eligibility.eligible:
        write_result_json(out_dir, {"eligibility": eligibility.as_dict(), "series_instance_uid": uid})
        console.print(f"[yellow]series {uid} is not eligible:[/]")
        for reason in eligibility.reasons:
            console.print(f"  - {reason}")
        return EXIT_INELIGIBLE
    return _run_with_progress(settings, paths, headers, eligibility, out_dir, demo_weights, console)


def _run_with_progress(
    settings: Settings,
    paths: list[Path],
    headers: list,  # type: ignore[type-arg]
    eligibility: Eligibility,
    out_dir: Path,
    demo_weights: bool,
    console: Console,
) -> int:
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("analysing", total=1.0)
        try:
            output = run_analysis(
                paths=paths,
                out_dir=out_dir,
                eligibility=eligibility,
                headers=headers,
                models=settings.model_provider(demo_weights=demo_weights or None),
                ae_title=settings.ae_title,
                progress=lambda stage, frac: progress.update(task, completed=frac, description=stage),
            )
        except Exception as exc:  # reported as exit 1 with the message, never a traceback dump
            logger.exception("analysis failed")
            console.print(f"[red]error:[/] analysis failed: {type(exc).__name__}: {exc}")
            return EXIT_ERROR
    console.print(f"results written to {output.out_dir}")
    for name in sorted(p.name for p in output.out_dir.iterdir() if not p.name.startswith(".")):
        console.print(f"  {name}")
    return EXIT_DONE


def import_into_server(settings: Settings, folder: Path, *, console: Console) -> int:
    """Store every valid file as if received by the SCP, then finalise its series.

    Eligible series are put on the queue of the installation that ``settings`` points at, so
    a running ``lungcds serve`` (or its workers) analyses them.
    """
    from server.tasks.app import create_celery, enqueue_analysis

    upgrade(settings.database_url)
    celery_app = create_celery(settings)
    intake = SeriesIntake(
        make_engine(settings.database_url),
        settings,
        lambda job_id, revision: enqueue_analysis(celery_app, job_id, revision),
    )
    spool = Spool(settings.spool_dir, min_free_bytes=settings.min_free_disk_mb * 2**20, admit=intake.admit)
    touched: set[str] = set()
    stored_count = 0
    files = candidate_files(folder)
    for path in files:
        try:
            stored = spool.store_file(path)
            try:
                intake.instance_stored(stored, None)
            except InvalidInstance:
                if not stored.duplicate:
                    spool.discard(stored)
                raise
        except InvalidInstance as exc:
            console.print(f"[yellow]refused[/] {path.name}: {exc.reason}")
            intake.file_refused(path, exc.status, exc.reason, exc.detail)
            continue
        except OutOfResources as exc:
            console.print(f"[red]error:[/] out of resources: {exc}")
            return EXIT_ERROR
        touched.add(str(stored.header.series_instance_uid))
        stored_count += 1
    for uid in sorted(touched):
        intake.finalize(uid, trigger="folder import")
    console.print(f"imported {stored_count} instances in {len(touched)} series; refused {len(files) - stored_count}")
    return EXIT_DONE if touched else EXIT_ERROR
