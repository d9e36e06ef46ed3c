"""The Ray sweep runner: a small grid on a local Ray with 2 workers, one killed mid-sweep; resumable."""

from __future__ import annotations

import json
import os
import signal

import pytest

from interp_steer.errors import InterpSteerError
from interp_steer.sweeps import SweepConfig, load_grid, sweep

ray = pytest.importorskip("ray")

TEXTS = ["The river runs past the old mill and into the valley.", "A short note about the weather today."]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    """A tiny random Llama saved as a Hugging Face folder: what the workers load with load_model(path)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-hf")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _pairs(path, n):
    rows = [{"prompt": f"Question {i}: what do you prefer?", "chosen": f"Tea, number {i}.",
             "rejected": f"Coffee, number {i}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _grid(tmp_path, folder):
    return {"model": str(folder), "targets": [_pairs(tmp_path / "good.jsonl", 24), _pairs(tmp_path / "few.jsonl", 3)],
            "methods": ["caa", {"name": "bipo", "max_steps": 2, "batch_size": 2}], "layers": [0, 1],
            "strengths": [2.0], "train_pairs": 8, "val_pairs": 4, "test_pairs": 6, "ppl_tokens": 16,
            "fluency_texts": TEXTS}


def test_grid_validation_names_the_problem(tmp_path):
    with pytest.raises(InterpSteerError, match="unknown grid key"):
        SweepConfig.from_dict({"targets": ["x"], "methods": ["caa"], "layer": [1]})
    with pytest.raises(InterpSteerError, match="unknown method 'pca'"):
        SweepConfig.from_dict({"targets": ["x"], "methods": ["pca"]})
    with pytest.raises(InterpSteerError, match="strength must be > 0"):
        SweepConfig.from_dict({"targets": ["x"], "methods": ["caa"], "strengths": [0]})
    (tmp_path / "g.yaml").write_text("targets: [a\n")
    with pytest.raises(InterpSteerError, match="cannot parse the grid"):
        load_grid(tmp_path / "g.yaml")
    cfg = SweepConfig.from_dict({"targets": ["a", "b"], "methods": ["caa", "bipo"], "layers": [1, 2],
                                 "lrs": [1e-2, 1e-3]})
    cells = cfg.cells()  # lrs multiply only the trained method: 2 targets × 2 layers × (1 + 2)
    assert len(cells) == 12 and len({c["id"] for c in cells}) == 12


def test_sweep_on_two_ray_workers_survives_a_killed_worker_and_resumes(tmp_path, tiny_folder):
    out = tmp_path / "sweep"
    grid = _grid(tmp_path, tiny_folder)
    killed: list[int] = []

    def kill_the_other_worker(row):
        if killed or row.get("worker_pid") is None:
            return
        pids = [int(p.name) for p in (out / "workers").iterdir()]
        other = [p for p in pids if p != row["worker_pid"]]
        if other:
            os.kill(other[0], signal.SIGKILL)
            killed.append(other[0])

    report = sweep(grid, out, workers=2, progress=False, on_cell=kill_the_other_worker)
    assert killed, "no worker was killed"
    ids = [c["id"] for c in SweepConfig.from_dict(grid).cells()]
    assert report["n_cells"] == 8 and sorted(r["id"] for r in report["cells"]) == sorted(ids)  # each once
    by_target = {t: [r for r in report["cells"] if r["target"].endswith(t)] for t in ("good.jsonl", "few.jsonl")}
    assert all(r["status"] == "done" for r in by_target["good.jsonl"]), [r.get("error") for r in report["cells"]]
    assert all(r["status"] == "failed" and "do not fill" in r["error"] for r in by_target["few.jsonl"])
    assert report["n_done"] == 4 and report["n_failed"] == 4
    assert len(list((out / "workers").iterdir())) >= 3  # the killed actor was restarted by Ray
    for r in by_target["good.jsonl"]:
        (row,) = r["rows"]
        assert row["strength"] == 2.0 and row["ppl_ratio_plus"] > 0 and -1 <= row["dp_plus"] <= 1
    for name in ("sweep.json", "sweep.csv", "sweep.md", "sweep.html"):
        assert (out / name).is_file()
    assert len((out / "sweep.csv").read_text().strip().splitlines()) == 1 + 8
    again = sweep(grid, out, workers=2, progress=False)
    assert again["ran"] == 0 and again["skipped"] == 8 and not ray.is_initialized()
