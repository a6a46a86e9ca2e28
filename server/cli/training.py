"""``lungcds train``: the training recipes of the learned models, on a hospital's own data.

Each command is a thin shell around the recipe in ``models/`` (the defaults are the published
ones) and ends by printing the ``lungcds models install`` line for the file it wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

from server.core.logging import configure_logging

if TYPE_CHECKING:
    from models.published.initialisation import Initialisation

__all__ = ["train_app"]

train_app = typer.Typer(no_args_is_help=True, help="Train the learned models on your own data")
console = Console(stderr=True, soft_wrap=True)
InitOption = Annotated[
    Path | None,
    typer.Option(
        "--init",
        exists=True,
        help="Start from these weights: an authors' published file (see `lungcds models formats`) or a lungcds file",
    ),
]


def _initialisation(path: Path | None, recipe: str, out: Path) -> Initialisation | None:
    """The ``--init`` file as the recipe reads it (published files converted into ``out/init``); exit 2 if refused."""
    if path is None:
        return None
    from models.published.initialisation import initialisation

    try:
        init = initialisation(path, recipe, out / "init")
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    if init.record is not None:
        console.print(f"--init: {init.record['title']} from {path}, converted to {init.path}")
    return init


@train_app.command("lobes")
def train_lobes_command(
    pairs: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV: image, label[, split]")],
    out: Annotated[Path, typer.Option("--out", help="Folder for lobes.safetensors and its model card")],
    max_epochs: Annotated[int, typer.Option(help="Upper bound on epochs")] = 500,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation Dice before stopping")] = 30,
    label_values: Annotated[
        str, typer.Option(help="Label values of LUL,LLL,RUL,RML,RLL in the label files")
    ] = "1,2,3,4,5",
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
) -> None:
    """Train the five-lobe segmentation network on your own labelled scans (nnU-Net-style recipe)."""
    from models.segmentation.training import LobeTrainingConfig, train_lobes

    configure_logging("INFO", json=False)
    values = tuple(int(v) for v in label_values.split(","))
    if len(values) != 5:
        console.print("[red]--label-values needs five comma-separated integers (LUL,LLL,RUL,RML,RLL)[/]")
        raise typer.Exit(2)
    config = LobeTrainingConfig(
        pairs_csv=pairs,
        output_dir=out,
        seed=seed,
        label_values=(values[0], values[1], values[2], values[3], values[4]),
        max_epochs=max_epochs,
        patience=patience,
        device=device,
    )
    result = train_lobes(config)
    console.print(f"best validation mean Dice {result.best_mean_dice:.3f} at epoch {result.best_epoch}")
    console.print(f"install it with: lungcds models install {result.weights_path} --name lobes")


@train_app.command("corads")
def train_corads_command(
    csv: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV: image, corads[, lung_mask, lesion_map, split]")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for checkpoints and the ensemble file")],
    seeds: Annotated[str, typer.Option(help="Comma list of member seeds (10 members were deployed)")] = "0",
    max_batches: Annotated[int, typer.Option(help="Upper bound on training batches per member")] = 200_000,
    validate_every: Annotated[int, typer.Option(help="Batches between validations")] = 500,
    patience: Annotated[int, typer.Option(help="Early stopping patience in batches (thesis: 10 000)")] = 10_000,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    init: InitOption = None,
) -> None:
    """Train the CO-RADS DenseNet-201 ensemble with the thesis recipe (sections 3.3.3-3.3.6).

    --init: 2D ImageNet weights inflated into every member (T section 3.3.3), e.g. torchvision's
    densenet201-c1103571.pth or a safetensors state dict with torchvision's names.
    """
    from models.corads.training import TrainingConfig, train_corads

    configure_logging("INFO", json=False)
    initial = _initialisation(init, "corads", out)
    config = TrainingConfig(
        pretrained_2d=initial.path if initial is not None else None,
        csv_path=csv,
        output_dir=out,
        seeds=tuple(int(s) for s in seeds.split(",") if s.strip()),
        max_batches=max_batches,
        validate_every=validate_every,
        patience=patience,
        gradient_checkpointing=gradient_checkpointing,
        device=device,
    )
    result = train_corads(config)
    console.print(f"ensemble written to {result.ensemble_path} ({len(result.members)} members)")
    console.print("install it with: lungcds models install " + str(result.ensemble_path) + " --name corads")


@train_app.command("i3dr")
def train_i3dr_command(
    csv: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV of CTs, masks and labels")],
    model: Annotated[str, typer.Option("--model", help="a (patient level) or b (lobe level, Algorithm 1)")],
    out: Annotated[Path, typer.Option("--out", help="Folder for i3dr_a.safetensors or i3dr_b.safetensors")],
    max_epochs: Annotated[int, typer.Option(help="Upper bound on epochs (early stopping, patience 15)")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="Folder for preprocessed inputs")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    init: InitOption = None,
) -> None:
    """Train I3Dr model A or B with the thesis recipe (sections 2.4.4-2.4.5); join A and B to install.

    --init: the backbone's starting weights; the thesis started from Kinetics RGB I3D weights
    (model_rgb.pth as the STOIC2021 teams published it), or a safetensors backbone state dict.
    """
    from dataclasses import replace

    from models.i3dr.training import I3drTrainingConfig, TrainingRecipe, train_i3dr

    configure_logging("INFO", json=False)
    if model not in ("a", "b"):
        console.print(f"[red]--model must be a or b, got {model!r}[/]")
        raise typer.Exit(2)
    part: Literal["a", "b"] = "a" if model == "a" else "b"
    recipe = replace(TrainingRecipe(), max_epochs=max_epochs, seed=seed)
    initial = _initialisation(init, "i3dr", out)
    try:
        config = I3drTrainingConfig(
            csv_path=csv,
            output_dir=out,
            model=part,
            recipe=recipe,
            device=device,
            cache_dir=cache_dir,
            pretrained_backbone=initial.path if initial is not None else None,
        )
        result = train_i3dr(config)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    console.print(f"model {model.upper()} written to {result.path}")
    console.print("after training both parts: lungcds train i3dr-join A_FILE B_FILE --out i3dr.safetensors")


@train_app.command("i3dr-join")
def join_i3dr_command(
    model_a: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="i3dr_a.safetensors")],
    model_b: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="i3dr_b.safetensors")],
    out: Annotated[Path, typer.Option("--out", help="The joined file to install as i3dr")],
) -> None:
    """Join trained models A and B into the one I3Dr weights file (both cards kept)."""
    from models.i3dr import I3dr

    try:
        path = I3dr.from_parts(model_a, model_b).save(out)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    console.print(f"I3Dr written to {path}; install it with: lungcds models install {path} --name i3dr")


@train_app.command("stoic")
def train_stoic_command(
    csv: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV of CTs, masks, age, sex, labels")],
    member: Annotated[str, typer.Option("--member", help="Registry name, e.g. stoic_code1055")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the member's weights file")],
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE to change one setting of the recipe (repeatable)")
    ] = None,
    init: InitOption = None,
) -> None:
    """Train one STOIC2021 member with its authors' recipe on your own data (thesis chapter 4, T3).

    --init: a member file or the authors' published checkpoint of that member (its networks start
    the training), Kinetics I3D weights for the baseline's backbone, or hal9000's ImageNet
    backbones (the authors' mobnet_v3_large_imgnet.pth and resnet18_imgnet.pth).
    """
    from models.stoic.recipes import build_config, recipe

    configure_logging("INFO", json=False)
    pairs = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            console.print(f"[red]--set needs KEY=VALUE, got {item!r}[/]")
            raise typer.Exit(2)
        pairs[key.strip()] = value.strip()
    initial = _initialisation(init, member, out)
    if initial is not None:
        pairs[_INIT_SETTINGS[initial.kind]] = str(initial.path)
    try:
        train, _ = recipe(member)
        result = train(build_config(member, csv, out, pairs))
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    console.print(f"{member} written to {result.path}")
    console.print(f"install it with: lungcds models install {result.path} --name {member}")


#: The recipe setting each kind of ``--init`` file goes to (a recipe without it refuses the file).
_INIT_SETTINGS = {
    "member": "initial_weights",
    "as_given": "initial_weights",
    "i3d_backbone": "backbone_init",
    "hal9000_backbones": "initialisation",
}
