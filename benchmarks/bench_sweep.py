"""The Ray sweep runner on this machine: the same grid with 1 and 2 Ray workers, and against running its cells
in one plain process (the per-cell overhead of Ray: actor start-up, model load per worker, scheduling).

Grid: CAA on the embedded model, power-seeking free-text pairs (32 train, 8 validation, 16 test), layers
8, 10, 12, 14, 15, 16, strength 2, 4 fluency texts of 64 tokens. Results: ``benchmarks/results/sweep.json``.

    python benchmarks/bench_sweep.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, save  # noqa: E402

GRID = {"targets": ["bipo:power-seeking"], "methods": ["caa"], "layers": [8, 10, 12, 14, 15, 16],
        "strengths": [2.0], "train_pairs": 32, "val_pairs": 8, "test_pairs": 16, "ppl_texts": 4, "ppl_tokens": 64}


def main() -> int:
    if not (SHARED_DATA / "bipo" / "power-seeking").is_dir():
        print(f"skipped: {SHARED_DATA}/bipo/power-seeking not found")
        return 0
    import torch

    from interp_steer.models import load_model
    from interp_steer.sweeps import SweepConfig, run_cell, sweep

    cfg = SweepConfig.from_dict(GRID)
    cells = cfg.cells()
    tmp = Path(tempfile.mkdtemp())
    try:
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        model = load_model()
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        plain = [run_cell(model, None, cfg, c, tmp) for c in cells]
        plain_cells_s = time.perf_counter() - t1
        plain_s = time.perf_counter() - t0
        del model
        walls = {}
        for workers in (1, 2):
            t = time.perf_counter()
            rep = sweep(cfg, tmp / f"ray{workers}", workers=workers, progress=False)
            walls[workers] = time.perf_counter() - t
            assert rep["n_done"] == len(cells), rep
        same = all(abs(a["rows"][0]["dp_plus"] - b["rows"][0]["dp_plus"]) < 1e-6 for a, b in zip(
            plain, sorted(rep["cells"], key=lambda r: [c["id"] for c in cells].index(r["id"])), strict=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "grid": GRID, "n_cells": len(cells), "plain_process_s": plain_s, "plain_model_load_s": load_s,
        "plain_cells_s": plain_cells_s, "ray_1_worker_s": walls[1], "ray_2_workers_s": walls[2],
        "speedup_2_over_1_workers": walls[1] / walls[2],
        "ray_overhead_per_cell_s": (walls[1] - plain_s) / len(cells),
        "same_results_as_plain": same,
        "note": "2 cores: two workers each hold a model (load once per worker) and share the cores with the driver",
    }
    save("sweep", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
