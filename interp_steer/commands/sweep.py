"""``interp-steer sweep GRID --output-dir D``: a grid of steering experiments on Ray (see :mod:`interp_steer.sweeps`).

    interp-steer sweep grid.yaml --output-dir runs/sweep                 # local Ray on this machine's cores
    interp-steer sweep grid.yaml --output-dir runs/sweep --address auto  # join a running Ray cluster

A rerun on the same folder skips finished cells.
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_sweep(args: argparse.Namespace) -> int:
    from interp_steer.sweeps import load_grid, sweep
    from interp_steer.validation import check_number

    cfg = load_grid(args.grid)  # parsed and checked before Ray or any model starts
    if args.workers is not None:
        check_number(args.workers, "--workers", minimum=1, integer=True)
    check_number(args.cpus_per_worker, "--cpus-per-worker", minimum=0, strict_min=True)
    check_number(args.gpus_per_worker, "--gpus-per-worker", minimum=0)
    report = sweep(cfg, args.output_dir, workers=args.workers, address=args.address,
                   cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker)
    print(f"{report['n_done']} of {report['n_cells']} cells done ({report['n_failed']} failed; ran {report['ran']}, "
          f"skipped {report['skipped']}); report: {args.output_dir}/sweep.md, sweep.json, sweep.csv, sweep.html")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a grid of steering experiments on Ray (resumable)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("grid", help="grid file (.json, .yaml or .toml): targets, methods, layers, lrs, seeds, strengths")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--workers", type=int, default=None, help="Ray actors (default: cores / --cpus-per-worker)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.set_defaults(func=cmd_sweep)
