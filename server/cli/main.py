"""The ``lungcds`` command line (Typer): serve, worker, analyze, import, demo, apikey, models, db, train, bench."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from server.cli.bench import bench_app
from server.cli.models import models_app
from server.cli.options import ConfigOption
from server.cli.options import settings as _settings
from server.cli.training import train_app
from server.core.logging import configure_logging

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="lungcds: decision support for chest CT")
apikey_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys")
db_app = typer.Typer(no_args_is_help=True, help="Database schema")
app.add_typer(apikey_app, name="apikey")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True, soft_wrap=True)


@app.command()
def serve(
    config: ConfigOption = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Workers run elsewhere (distributed)")] = False,
) -> None:
    """Run the DICOM SCP and the REST API (plus a worker in the embedded default)."""
    from server.runtime import ServerRuntime

    settings = _settings(config)
    runtime = ServerRuntime(settings, with_worker=not no_worker)
    runtime.start()
    console.print(
        f"[bold]lungcds[/] {settings.ae_title} DICOM port {runtime.dicom_port}, "
        f"REST http://{settings.bind_host}:{runtime.api_port}/api/v1"
    )
    runtime.run_forever()


@app.command()
def worker(
    config: ConfigOption = None,
    queues: Annotated[str, typer.Option(help="Comma list of queues to consume")] = "gpu,cpu",
    concurrency: Annotated[int | None, typer.Option(help="Worker processes")] = None,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, threads or solo")] = "prefork",
    hostname: Annotated[
        str | None,
        typer.Option(help="Celery node name, e.g. gpu1@%h; each worker process on one host needs its own"),
    ] = None,
) -> None:
    """Run a Celery worker for the distributed mode."""
    from server.core.db import upgrade
    from server.tasks.app import create_celery

    settings = _settings(config)
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    upgrade(settings.database_url)
    celery_app = create_celery(settings)
    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={settings.worker_concurrency}",
        f"--pool={pool}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv)


@app.command()
def analyze(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder with one CT series")],
    out: Annotated[Path, typer.Option("--out", help="Output folder")],
    config: ConfigOption = None,
    series: Annotated[str | None, typer.Option(help="Series Instance UID when the folder holds several")] = None,
    demo_weights: Annotated[
        bool, typer.Option("--demo-weights", help="Run learned models with generated weights (marked unvalidated)")
    ] = False,
) -> None:
    """Offline analysis of one series folder: exit 0 done, 2 ineligible, 1 error."""
    from server.services.offline import analyze_folder

    settings = _settings(config)
    code = analyze_folder(settings, dicom_dir, out, series_uid=series, demo_weights=demo_weights, console=console)
    raise typer.Exit(code)


@app.command(name="import")
def import_folder(
    folder: Annotated[Path, typer.Argument(help="Folder of DICOM files to add as if received")],
    config: ConfigOption = None,
) -> None:
    """Import a folder through the SCP's validation; eligible series are queued."""
    from server.services.offline import import_into_server

    settings = _settings(config)
    raise typer.Exit(import_into_server(settings, folder, console=console))


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the demo server keeps its data (default: a new temp folder)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the analysis")] = 900.0,
    keep_running: Annotated[bool, typer.Option(help="Keep the server up afterwards to explore the REST API")] = False,
) -> None:
    """Start a server, send it a chest CT, wait, and show where the SR and PDF went."""
    from server.demo import run_demo

    configure_logging("WARNING", json=True)
    raise typer.Exit(
        run_demo(data_dir=data_dir, timeout=timeout, keep_running=keep_running, console=Console(soft_wrap=True))
    )


@apikey_app.command("create")
def apikey_create(
    role: Annotated[str, typer.Option(help="viewer or admin")],
    label: Annotated[str | None, typer.Option(help="Who or what the key is for")] = None,
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from server.core.db import make_engine, session_scope, upgrade
    from server.core.security import ROLES, create_api_key

    if role not in ROLES:
        console.print(f"[red]role must be one of {', '.join(ROLES)}[/]")
        raise typer.Exit(2)
    settings = _settings(config)
    upgrade(settings.database_url)
    with session_scope(make_engine(settings.database_url)) as session:
        key = create_api_key(session, role, label)
    console.print(f"API key {key.id} ({key.role}) — shown once, store it now:")
    print(key.secret)


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[int, typer.Argument(help="Key id")], config: ConfigOption = None) -> None:
    """Revoke an API key by id."""
    from server.core.db import make_engine, session_scope
    from server.core.security import revoke_api_key

    settings = _settings(config)
    with session_scope(make_engine(settings.database_url)) as session:
        if not revoke_api_key(session, key_id):
            console.print(f"[red]no active API key {key_id}[/]")
            raise typer.Exit(1)
    console.print(f"API key {key_id} revoked")


@apikey_app.command("list")
def apikey_list(config: ConfigOption = None) -> None:
    """List API keys (ids, roles, prefixes; never the keys)."""
    from sqlmodel import Session, select

    from server.core.db import make_engine
    from server.db_models import ApiKey

    settings = _settings(config)
    table = Table("id", "role", "prefix", "label", "created", "revoked")
    with Session(make_engine(settings.database_url)) as session:
        for row in session.exec(select(ApiKey)).all():
            table.add_row(
                str(row.id), row.role, row.key_prefix, row.label or "", str(row.created_at), str(row.revoked_at or "")
            )
    Console(width=160).print(table)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply database migrations up to the newest schema."""
    from server.core.db import upgrade

    settings = _settings(config)
    upgrade(settings.database_url)
    console.print("database schema is up to date")


def main() -> None:
    """Entry point for ``python -m server.cli.main``."""
    app(sys.argv[1:])
