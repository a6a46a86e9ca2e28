"""An analogue of the summing-digits experiment of thesis section 2.4.1 (figure 2.2b), per bag size.

For every bag size it trains the bag-of-digits model (I3Dr's model B on 8 x 8 digit images,
``models.i3dr.digits``) on bag sums only and evaluates it on single test digits: it prints one
JSON line per bag size (the line ``lungcds bench i3dr-digits --bag-size K`` prints) and then a
table of single-digit MAE and rounded accuracy beside two baselines that know no single digit:
each test digit predicted as the mean of its own bag of ``K``, and as the mean digit.
The thesis reports "nearly flawless" single-digit estimates up to bag size 32 on MNIST with
60 000 training images (T§2.5.1, figure 2.2b); scikit-learn's digits have about 1 150 training
images here, so read the large bag sizes with that in mind (``--fixed-bags`` divides them into
bags once, as the thesis did, instead of at every step).

Run with the project's interpreter::

    .venv/bin/python benchmarks/i3dr_digits.py --bag-sizes 1,2,4,8,16,32,64 --steps 2000 [--width 64]
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from models.i3dr.digits import digit_benchmark


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bag-sizes", default="1,2,4,8,16,32,64", help="comma-separated bag sizes")
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps per bag size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed-bags", action="store_true", help="divide the training images into bags once")
    parser.add_argument("--width", type=int, default=32, help="channels of the digit feature extractor")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    rows = []
    for bag_size in (int(v) for v in args.bag_sizes.split(",")):
        row = digit_benchmark(bag_size, seed=args.seed, steps=args.steps, fixed_bags=args.fixed_bags, width=args.width)
        print(json.dumps(row), flush=True)
        rows.append(row)
    bags = "fixed once (thesis protocol)" if args.fixed_bags else "redrawn every step"
    print(
        f"\nsingle-digit evaluation, width {args.width}, {args.steps} steps, bags {bags}, "
        f"{rows[0]['test_images']} test digits"
    )
    print(
        "bag size | digit MAE | accuracy | bag-mean MAE | bag-mean acc. | mean-digit MAE | mean-digit acc. "
        "| val. bag MAE | best step | seconds"
    )
    for row in rows:
        print(
            f"{row['bag_size']:8d} | {row['digit_mae']:9.3f} | {row['digit_accuracy']:8.3f} | "
            f"{row['bag_mean_mae']:12.3f} | {row['bag_mean_accuracy']:13.3f} | "
            f"{row['baseline_mae']:14.3f} | {row['baseline_accuracy']:15.3f} | {row['validation_bag_mae']:12.2f} | "
            f"{row['best_step']:9d} | {row['seconds']:7.0f}"
        )
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
