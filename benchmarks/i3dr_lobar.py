"""Lobar PV and FPV from patient-level labels (thesis sections 2.4.2-2.4.3, Table 2.2), on phantoms.

Trains I3Dr's model A and model B (Algorithm 1) on synthetic chest CTs whose lobes vary in
volume and attenuation, with patient-level PV and FPV as the only labels, through the same CSV
path as ``lungcds train i3dr``; then prints the lobe-level and patient-level MAE with and
without rescaling beside the thesis' Table 2.2, and a fixed-share reference (model A's patient
estimate split by each lobe's mean training share).  Scaled down to a CPU: see
``models.i3dr.lobar_benchmark`` for what differs from the thesis.

Run with the project's interpreter::

    .venv/bin/python benchmarks/i3dr_lobar.py [--train 64 --validation 16 --test 32 --epochs 60]
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from models.i3dr.lobar_benchmark import LobarBenchmarkConfig, format_table, lobar_benchmark
from models.i3dr.training import TrainingRecipe


def main() -> None:
    """Run and print."""
    defaults = LobarBenchmarkConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=defaults.train_cases, help="training phantoms")
    parser.add_argument("--validation", type=int, default=defaults.validation_cases, help="validation phantoms")
    parser.add_argument("--test", type=int, default=defaults.test_cases, help="test phantoms")
    parser.add_argument("--epochs", type=int, default=defaults.recipe.max_epochs, help="maximum epochs per model")
    parser.add_argument("--learning-rate", type=float, default=defaults.recipe.learning_rate)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = TrainingRecipe(learning_rate=args.learning_rate, max_epochs=args.epochs, augmentation=None, seed=args.seed)
    config = LobarBenchmarkConfig(
        train_cases=args.train, validation_cases=args.validation, test_cases=args.test, recipe=recipe, seed=args.seed
    )
    print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    result = lobar_benchmark(config)
    print(format_table(result))
    print("\ntrue lobar values of the test phantoms (L, min-max):")
    for lobe, ranges in result["truth_range"].items():
        pv, fpv = ranges["pv_l"], ranges["fpv_l"]
        print(f"  {lobe}: PV {pv[0]:.2f}-{pv[1]:.2f}, FPV {fpv[0]:.2f}-{fpv[1]:.2f}")
    for part, fit in result["training"].items():
        print(
            f"model {part.upper()}: best epoch {fit['best_epoch']} of {fit['epochs']} "
            f"(stopped early: {fit['stopped_early']}), validation loss {fit['best_validation_loss_scaled_l1']:.3f} "
            f"(L1 in units of the label spread {result['label_scales'][part]})"
        )
    print(f"outputs not rescaled: {result['not_rescaled'] or 'none'}")
    print(f"{result['seconds']:.0f} s; load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(json.dumps({"rows": result["rows"], "seconds": result["seconds"]}))


if __name__ == "__main__":
    main()
