"""The ``lungcds`` command line (Typer).

Sub-commands: serve, worker, analyze, import, demo, apikey, models, db, config, train, bench; and ``--version``.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import typer
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from models import PIPELINE_VERSION
from server.cli.bench import bench_app
from server.cli.models import models_app
from server.cli.options import ConfigOption, console
from server.cli.options import settings as _settings
from server.cli.training import train_app
from server.core.config import Settings
from server.core.logging import configure_logging

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["app", "setting_rows", "startup_warnings"]

logger = logging.getLogger(__name__)

# Tracebacks without local variables: those hold settings (URLs with passwords) and patient data.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="lungcds: decision support for chest CT",
    pretty_exceptions_show_locals=False,
)
apikey_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys")
db_app = typer.Typer(no_args_is_help=True, help="Database schema")
config_app = typer.Typer(no_args_is_help=True, help="The settings in force")
app.add_typer(apikey_app, name="apikey")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")

#: What ``config show`` prints instead of a secret.
HIDDEN = "***"
#: Setting names (and URL query parameters) whose values are secrets whatever their type.
_SECRET_NAME = re.compile(r"secret|passw|token|api_?key|hmac|credential", re.IGNORECASE)


def _package_version() -> str:
    """The installed distribution's version (a source tree that was never installed has none)."""
    try:
        return version("lungcds")
    except PackageNotFoundError:
        return "not installed"


def _print_version(value: bool) -> None:
    """``--version``: print both versions and stop before any command or settings are loaded."""
    if value:
        print(f"lungcds {_package_version()} (pipeline {PIPELINE_VERSION})")
        raise typer.Exit()


@app.callback()
def _global_options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the package version and PIPELINE_VERSION (part of every job's key and report UID), then exit",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Options that apply before any command (Typer needs a callback to hold them)."""


def _report_native_crashes() -> None:
    """Have a crash in native code (a segmentation fault, an abort) print every thread's Python stack.

    A long-running process that dies that way otherwise leaves only its exit signal; with this its
    log shows where each thread was (the process's own stderr, which the service manager or the log
    file keeps, even where ``sys.stderr`` has been replaced).  Worker processes forked from this one
    inherit it.
    """
    if sys.__stderr__ is not None:
        faulthandler.enable(file=sys.__stderr__, all_threads=True)


@app.command()
def serve(
    config: ConfigOption = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Workers run elsewhere (distributed)")] = False,
) -> None:
    """Run the DICOM SCP and the REST API (plus a worker in the embedded default)."""
    from server.runtime import ServerRuntime

    _report_native_crashes()
    settings = _settings(config)
    runtime = ServerRuntime(settings, with_worker=not no_worker)
    runtime.start()
    for problem in startup_warnings(settings, runtime.engine):
        logger.warning(problem)
        console.print(f"[yellow]warning:[/] {escape(problem)}")
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

    _report_native_crashes()
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

    configure_logging("WARNING", console=console)
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


def startup_warnings(settings: Settings, engine: Engine) -> list[str]:
    """What keeps a started server from being of use, in words an operator acts on.

    Without a destination, analyses run but their reports reach no PACS; without an API key or
    OIDC, nobody can authenticate to the REST API (only the health probes and /metrics answer).
    """
    from sqlalchemy import func
    from sqlmodel import Session, col, select

    from server.db_models import ApiKey
    from server.routing.destinations import destinations_in_force

    problems = []
    if not destinations_in_force(settings).destinations.destinations:
        problems.append(
            "no report destination is configured: analyses run but their reports go nowhere "
            "(set LUNGCDS_DESTINATIONS, or PUT /api/v1/destinations)"
        )
    if settings.oidc_issuer is None:
        with Session(engine) as session:
            keys = session.exec(select(func.count()).select_from(ApiKey).where(col(ApiKey.revoked_at).is_(None))).one()
        if not keys:
            problems.append(
                "no API key exists and OIDC is not configured: nobody can use the REST API "
                "(lungcds apikey create --role admin)"
            )
    return problems


def _without_credentials(text: str) -> str:
    """``text`` with the password of a URL and its secret query parameters replaced by :data:`HIDDEN`."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        has_password = parts.password is not None
    except ValueError:  # not a URL after all (e.g. a bad port): show nothing that might be one
        return HIDDEN
    query = "&".join(
        f"{key}={HIDDEN}" if _SECRET_NAME.search(unquote(key)) else f"{key}{sep}{value}"
        for key, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if not has_password and query == parts.query:
        return text  # nothing to hide: shown exactly as set (urlunsplit would drop sqlite's empty host)
    netloc = parts.netloc
    if has_password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{HIDDEN}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _public(name: str, value: Any) -> Any:
    """``value`` of setting ``name`` as JSON data, with every secret replaced by :data:`HIDDEN`."""
    if isinstance(value, SecretStr | SecretBytes):
        return HIDDEN if value.get_secret_value() else ""
    if _SECRET_NAME.search(name) and value not in (None, ""):
        return HIDDEN
    if isinstance(value, str):
        return _without_credentials(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_public(name, item) for item in value]
    if isinstance(value, dict):
        return {key: _public(str(key), item) for key, item in value.items()}
    return value


def setting_rows(settings: BaseModel, config: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every setting in force: ``{name: {"value": ..., "source": ...}}``, secrets hidden.

    ``source`` is the ``LUNGCDS_*`` variable that set it, the ``--config`` file, or ``default``
    (values derived from the data directory, such as the embedded database URL, are defaults).
    """
    environment = {name.upper() for name in os.environ}
    in_file = set(tomllib.loads(config.read_text(encoding="utf-8"))) if config is not None else set()
    rows: dict[str, dict[str, Any]] = {}
    for name in type(settings).model_fields:
        variable = f"LUNGCDS_{name.upper()}"
        if variable in environment:
            source = f"environment {variable}"
        elif name in in_file:
            source = f"file {config}"
        else:
            source = "default"
        rows[name] = {"value": _public(name, getattr(settings, name)), "source": source}
    return rows


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: setting -> value and source")] = False,
) -> None:
    """Every setting in force and where it comes from; passwords, keys and secrets are shown as ***."""
    try:
        settings = _settings(config)
    except ValidationError as exc:  # its message quotes the rejected values, which may be secrets
        for error in exc.errors(include_input=False, include_url=False):
            console.print(f"[red]{'.'.join(str(part) for part in error['loc'])}: {escape(error['msg'])}[/]")
        raise typer.Exit(2) from None
    rows = setting_rows(settings, config)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("setting", "value", "source")
    for name, row in rows.items():
        value = row["value"]
        text = "[dim]unset[/]" if value is None else escape(value if isinstance(value, str) else json.dumps(value))
        table.add_row(name, text, row["source"])
    Console(width=200).print(table)


def main() -> None:
    """Entry point for ``python -m server.cli.main``."""
    app(sys.argv[1:])
