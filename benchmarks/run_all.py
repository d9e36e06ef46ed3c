"""Run every benchmark script in turn (each prints and saves JSON under benchmarks/results/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["bench_generation.py"],
    ["bench_training_step.py", "--method", "yapo"],
    ["bench_training_step.py", "--method", "bipo"],
    ["bench_sparse_inference.py"],
    ["bench_mcq.py"],
    ["bench_shared_layers.py"],
    ["bench_contrastive.py"],
    ["bench_peers.py"],  # skips with the reason when steering-vectors / repeng are absent (make peers)
    ["bench_llamacpp.py"],  # skips unless LLAMA_CPP_CFFI_DIR names llama-cpp-cffi's CPU library
    ["bench_sweep.py"],
]
# bench_efficacy.py is not here: it trains every method on three behaviour sets (hours on a CPU; resumable)

if __name__ == "__main__":
    failed = []
    for script in SCRIPTS:
        print(f"=== {' '.join(script)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script[0]), *script[1:]], cwd=HERE).returncode != 0:
            failed.append(script[0])
    sys.exit(f"failed: {failed}" if failed else 0)
