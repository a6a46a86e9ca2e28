"""``lungcds models``: the registered models, their weights, and the authors' published checkpoints.

``install`` takes this pipeline's own weights files (``--name``) and, through
:mod:`models.published`, the checkpoints the STOIC2021 teams published, as they are (a file or the
authors' folder; ``formats`` lists the layouts); ``verify`` checks an installed model on the
built-in phantom; ``summary`` sets every architecture beside its reference counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from server.cli.options import ConfigOption
from server.cli.options import settings as load

__all__ = ["models_app"]

models_app = typer.Typer(no_args_is_help=True, help="Analysis models and their weights")
console = Console(stderr=True, soft_wrap=True)


@models_app.command("list")
def models_list(config: ConfigOption = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered models and installable alternatives (lungmask): availability and installed weight hashes."""
    from models.registry import KNOWN_MODELS
    from models.weights import origin_sentence
    from server.core.weights import AdminWeightStore

    settings = load(config)
    installed = AdminWeightStore(settings.weights_dir).installed()
    rows = []
    for spec in KNOWN_MODELS.values():
        weights = installed.get(spec.name)
        rows.append(
            {
                "name": spec.name,
                "version": spec.version,
                "implemented": spec.implemented,
                "needs_weights": spec.needs_weights,
                "weights_sha256": weights.sha256 if weights else None,
                "validation": weights.validation if weights else None,
                "origin": origin_sentence(weights.origin) if weights and weights.origin else None,
                "description": spec.description,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "version", "implemented", "weights", "description")
    for row in rows:
        weights_text = row["weights_sha256"] or ("not needed" if not row["needs_weights"] else "not installed")
        table.add_row(
            str(row["name"]),
            str(row["version"]),
            "yes" if row["implemented"] else "no",
            str(weights_text),
            str(row["description"]),
        )
    Console(width=160).print(table)


@models_app.command("install")
def models_install(
    path: Annotated[Path, typer.Argument(exists=True, help="A weights file, or an authors' published file or folder")],
    name: Annotated[
        str | None, typer.Option(help="Model name (see `lungcds models list`); needed for a lungcds weights file")
    ] = None,
    format_name: Annotated[
        str | None,
        typer.Option("--format", help="A published layout (see `lungcds models formats`), or 'lungcds' for our own"),
    ] = None,
    validation: Annotated[
        str | None,
        typer.Option(help="Your site's validation statement (who, data, report); without it outputs are unvalidated"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Install weights: a lungcds file under --name, or an authors' published checkpoint as it is.

    An authors' file or folder is recognised by its layout (or told with --format), converted
    with every parameter checked by name and shape, and installed with a record of each source
    file's SHA-256 and whether it is the published file's bytes.
    """
    from models.published.importer import import_published
    from server.core.weights import AdminWeightStore

    store = AdminWeightStore(load(config).weights_dir)
    try:
        if format_name == LUNGCDS_FORMAT or (format_name is None and not _in_published_layout(path)):
            if name is None:
                raise ValueError(f"{path} is in no published layout; a lungcds weights file needs --name")
            installed = store.install(path, name, validation=validation)
            console.print(f"installed {name}: sha256 {installed.sha256}")
            return
        result = import_published(path, store, format_name=format_name, model_name=name, validation=validation)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    for record in result.files:
        said = f"published as {record.published.path}" if record.published else "NOT a published file's bytes"
        console.print(f"  {record.path}: sha256 {record.sha256} ({said})")
    console.print(
        f"installed {result.installed.name} from {result.format.name} ({result.format.repository.url}, "
        f"licence {result.format.repository.licence}): sha256 {result.installed.sha256}"
    )


#: ``--format`` value of this pipeline's own weights files.
LUNGCDS_FORMAT = "lungcds"


def _in_published_layout(path: Path) -> bool:
    """True when ``path`` is in exactly one published layout (a lungcds weights file is in none)."""
    from models.published.format import PublishedFormatError
    from models.published.importer import resolve_format

    try:
        resolve_format(path)
    except PublishedFormatError:
        return False
    return True


@models_app.command("formats")
def models_formats(as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False) -> None:
    """The published checkpoint layouts `models install` reads: source, licence, what each gives and lacks."""
    from models.published.catalog import published_formats

    rows: list[dict[str, Any]] = [
        {
            "format": f.name,
            "model": f.model,
            "installable": f.installable,
            "title": f.title,
            "repository": f.repository.url,
            "commit": f.repository.commit,
            "licence": f.repository.licence,
            "files": [{"path": p.path, "sha256": p.sha256, "size": p.size} for p in f.published],
            "gives": f.gives,
            "missing": f.missing,
            "initialises": list(f.initialises),
            "notes": list(f.notes),
        }
        for f in published_formats().values()
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("format", "model", "repository (licence)", "published files", "gives / missing")
    for row in rows:
        table.add_row(
            str(row["format"]) + ("" if row["installable"] else " (--init)"),
            str(row["model"]),
            f"{row['repository']} ({row['licence']})",
            str(len(row["files"])),
            str(row["gives"]) + (f"; missing: {row['missing']}" if row["missing"] else ""),
        )
    Console(width=200).print(table)


@models_app.command("verify")
def models_verify(
    name: Annotated[str, typer.Argument(help="An installed model")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
    config: ConfigOption = None,
) -> None:
    """Check an installed model: its file's hash, that it loads, and its outputs on the built-in phantom.

    Exit 0 when intact and it ran, 1 when the file changed or the model did not run, 2 when
    nothing is installed under NAME.
    """
    from models.verification import as_json as verification_json
    from models.verification import verify_model
    from server.core.weights import AdminWeightStore

    store = AdminWeightStore(load(config).weights_dir)
    try:
        result = verify_model(store, name)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    document = verification_json(result)
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        print(f"model          {result.name}")
        state = "intact" if result.intact else "CHANGED since installation"
        print(f"weights        sha256 {result.file_sha256} ({state})")
        print(f"origin         {result.origin}")
        print(f"on the phantom {result.status}: {result.reason}")
        for key, value in result.outputs.items():
            print(f"  {key:<24} {'-' if value is None else f'{value:.6f}'}")
        print(f"output digest  {result.output_digest}")
        print(f"note           {document['note']}")
    if not (result.intact and result.ran):
        raise typer.Exit(1)


@models_app.command("summary")
def models_summary(as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False) -> None:
    """Every architecture: parameters, input shape and FLOPs next to a reference and its origin.

    The 14 networks of thesis Table 3.3 (FLOPs under the table's convention), then the
    segmentation networks (FLOPs = 2 x MACs of convolutions; see ``models.segmentation.flops``),
    then every network of each STOIC2021 member and of I3Dr (per forward pass).  Each row's
    ``reference_parameters_kind`` says whether its reference count was published (``pub``: e.g.
    thesis Table 3.3), computed by us from the authors' code (``code``) or is absent;
    ``reference_parameters_source`` names the table or file.  ``published_parameters`` is set only
    for published counts.  The lobe and lesion U-Nets are reconstructions (see their ``source``).
    """
    from dataclasses import asdict

    from models.i3dr import summary as i3dr_summary
    from models.segmentation import segmentation_summaries
    from models.stoic.catalog import member_summaries
    from models.zoo import summary

    rows = summary()
    for seg in segmentation_summaries().values():
        row = asdict(seg)
        row["input_shape"] = list(row["input_shape"][1:])
        rows.append(row)
    rows += member_summaries() + i3dr_summary()
    for row in rows:
        row.setdefault("parameters_table_convention", row["parameters"])
        row.setdefault("published_flops", None)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(
        "architecture",
        "input",
        "params (M)",
        "reference (M)",
        "FLOPs (1e11)",
        "published",
        caption="reference: pub = published (thesis, paper), code = counted by us from the authors' code",
    )
    for row in rows:
        table.add_row(
            str(row["name"]),
            "x".join(str(v) for v in row["input_shape"]),
            f"{row['parameters_table_convention'] / 1e6:.4f}",
            _reference(row),
            f"{row['flops'] / 1e11:.4f}",
            _scaled(row["published_flops"], 1e11),
        )
    Console(width=160).print(table)


def _reference(row: dict[str, Any]) -> str:
    """The reference count in millions with its kind: ``12.29 pub``, ``8.30 code`` or ``-``."""
    marks = {"published": "pub", "computed_from_authors_code": "code"}
    kind = str(row.get("reference_parameters_kind", "none"))
    value = _scaled(row.get("reference_parameters"), 1e6)
    return value if kind not in marks else f"{value} {marks[kind]}"


def _scaled(value: float | None, unit: float) -> str:
    return "-" if value is None else f"{value / unit:.2f}"
