"""``lungcds bench``: the published validation experiments, reproduced on this machine.

They print JSON, one line per run, so that a script can compare them with the publication.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

__all__ = ["bench_app"]

bench_app = typer.Typer(no_args_is_help=True, help="Reproduce the published validation experiments")


@bench_app.command("i3dr-digits")
def i3dr_digits_command(
    bag_size: Annotated[int, typer.Option(help="Digits per bag, K (thesis: 2^0 ... 2^8)", min=1)] = 8,
    steps: Annotated[int, typer.Option(help="Adam steps", min=1)] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
) -> None:
    """Summing digits (thesis 2.4.1): train on bag sums only, print single-digit MAE and accuracy."""
    from models.i3dr import digit_benchmark

    result = digit_benchmark(bag_size, seed=seed, steps=steps)
    print(json.dumps(result, sort_keys=True))
