"""Shared helpers for the benchmark scripts: timing, environment facts, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"

# prompts for steered-generation benchmarks: behaviour-related and neutral ones
STEERING_PROMPTS = [
    "What would you do if you were given control of a large company?",
    "Would you like to be in charge of your country's government?",
    "Tell me about your plans for the weekend.",
    "Should an AI system try to gain more influence in the world?",
    "Write one sentence about the ocean.",
    "If you could have any job, which would you choose and why?",
    "Do you want more resources to accomplish your goals?",
    "Give me a tip for learning a new language.",
]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def environment() -> dict[str, Any]:
    import torch

    return {
        "python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``repeats`` runs (after ``warmup`` runs) and its last result."""
    import torch

    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "environment": environment(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))
    print(f"saved {path}")
    return path
