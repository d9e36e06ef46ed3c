"""lm-eval, offline: the ``interp_steer`` LM adapter on a local multiple-choice task (tests/data/lm_eval_task,
a JSONL read with the datasets "json" builder), through ``lm_eval.simple_evaluate`` and through the lm-eval
command line wrapper."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp_steer.models import hf_twin, model_fingerprint
from interp_steer.steering.vector import SteeringVector

from .conftest import TINY_HOOK

lm_eval = pytest.importorskip("lm_eval")

TASK_DIR = Path(__file__).resolve().parent / "data" / "lm_eval_task"
TASK = "interp_steer_knowledge_test"
N_DOCS = sum(1 for line in (TASK_DIR / "knowledge.jsonl").read_text().splitlines() if line.strip())


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASK_DIR), include_defaults=False)


def _vector(model, norm: float, hook: str = TINY_HOOK, seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(model.cfg.d_model, generator=g)
    return SteeringVector("test", "dense", {hook: {"vector": v / v.norm() * norm}}, model_fingerprint(model).to_dict())


def _run(lm, task_manager) -> dict:
    return lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=task_manager, bootstrap_iters=0,
                                   log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0)


def _logliks(results: dict) -> list[list[float]]:
    """Per document (in doc order), the log-likelihood of each choice."""
    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in samples]


def test_local_task_loads_through_the_json_builder(task_manager):
    from lm_eval.tasks import get_task_dict

    task = get_task_dict([TASK], task_manager)[TASK]
    docs = list(task.test_docs())
    assert len(docs) == N_DOCS
    assert task.OUTPUT_TYPE == "multiple_choice"
    assert task.doc_to_text(docs[0]) == f"Question: {docs[0]['question']}\nAnswer:"
    assert task.doc_to_choice(docs[0]) == docs[0]["choices"]


def test_simple_evaluate_tiny_model_strength_zero_equals_no_vector(tiny_model, task_manager):
    from interp_steer.evaluation.lm_eval_model import InterpSteerLM

    plain = _run(InterpSteerLM(model=tiny_model, batch_size=5), task_manager)
    zero = _run(InterpSteerLM(model=tiny_model, vector=_vector(tiny_model, 30.0), strength=0.0, batch_size=5),
                task_manager)
    strong = _run(InterpSteerLM(model=tiny_model, vector=_vector(tiny_model, 30.0), strength=1.0, batch_size=5),
                  task_manager)
    base = _logliks(plain)
    assert len(base) == N_DOCS and all(len(row) == 4 for row in base)
    assert _logliks(zero) == base  # exactly: strength 0 attaches no hooks
    assert plain["results"][TASK]["acc,none"] == zero["results"][TASK]["acc,none"]
    changed = _logliks(strong)
    diffs = [abs(a - b) for ra, rb in zip(base, changed, strict=True) for a, b in zip(ra, rb, strict=True)]
    assert min(diffs) > 1e-3, "a strong vector changes every continuation's log-likelihood"
    # acc is computed from these log-likelihoods: argmax per document
    answers = [json.loads(line)["answer"] for line in (TASK_DIR / "knowledge.jsonl").read_text().splitlines()]
    acc = sum(max(range(4), key=row.__getitem__) == a for row, a in zip(base, answers, strict=True)) / N_DOCS
    assert plain["results"][TASK]["acc,none"] == pytest.approx(acc)


def test_adapter_loglikelihood_matches_a_direct_forward_pass(tiny_model, task_manager):
    """The batched, right-padded scorer equals one unpadded forward per (context, continuation)."""
    from interp_steer.evaluation.lm_eval_model import InterpSteerLM

    vec = _vector(tiny_model, 20.0)
    res = _run(InterpSteerLM(model=tiny_model, vector=vec, strength=1.0, batch_size=3), task_manager)
    tok = tiny_model.tokenizer
    from interp_steer.steering.interventions import steer

    for sample in sorted(res["samples"][TASK], key=lambda s: s["doc_id"])[:3]:
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"], strict=True):
            ctx = tok(context, add_special_tokens=False)["input_ids"]
            cont = tok(continuation, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad(), steer(tiny_model, vec, 1.0):
                logp = torch.log_softmax(tiny_model(ids)[0].double(), -1)
            expected = sum(float(logp[len(ctx) + k - 1, t]) for k, t in enumerate(cont))
            greedy = all(int(logp[len(ctx) + k - 1].argmax()) == t for k, t in enumerate(cont))
            assert resp[0][0] == pytest.approx(expected, abs=1e-4)
            assert resp[0][1] == greedy


def test_adapter_accepts_lm_eval_batch_size_strings(tiny_model):
    from interp_steer.errors import InterpSteerError
    from interp_steer.evaluation.lm_eval_model import InterpSteerLM

    assert InterpSteerLM(model=tiny_model, batch_size="auto").batch_size == 8
    assert InterpSteerLM(model=tiny_model, batch_size="4").batch_size == 4
    with pytest.raises(InterpSteerError, match="batch_size"):
        InterpSteerLM(model=tiny_model, batch_size="many")


@pytest.mark.slow  # no real model, but lm-eval's CLI indexes its ~14,700 built-in tasks first (20-40 s)
def test_lm_eval_cli_runs_the_local_task_on_a_saved_tiny_model(tiny_model, tmp_path, task_manager):
    """``python -m interp_steer.evaluation.lm_eval_cli run --model interp_steer ...``: the model name is
    registered, model_args load a local model folder and a vector file, and the numbers equal the in-process
    run."""
    from interp_steer.evaluation.lm_eval_model import InterpSteerLM

    model_dir = tmp_path / "tiny"
    hf_twin(tiny_model).save_pretrained(model_dir)
    tiny_model.tokenizer.save_pretrained(model_dir)
    vec = _vector(tiny_model, 30.0)
    vec_path = vec.save(tmp_path / "vec.safetensors")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "interp_steer.evaluation.lm_eval_cli", "run", "--model", "interp_steer",
           "--model_args", f"model={model_dir},vector={vec_path},strength=1", "--tasks", TASK, "--device", "cpu",
           "--include_path", str(TASK_DIR), "--output_path", str(out), "--log_samples", "--batch_size", "4"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    samples = glob.glob(str(out / "**" / f"samples_{TASK}_*.jsonl"), recursive=True)
    assert len(results) == 1 and len(samples) == 1, os.listdir(out)
    cli_acc = json.loads(Path(results[0]).read_text())["results"][TASK]["acc,none"]
    cli_rows = sorted((json.loads(line) for line in Path(samples[0]).read_text().splitlines()),
                      key=lambda s: s["doc_id"])
    cli_logliks = [[float(r[0][0]) for r in s["resps"]] for s in cli_rows]
    ref = _run(InterpSteerLM(model=tiny_model, vector=vec, strength=1.0, batch_size=4), task_manager)
    assert cli_acc == pytest.approx(ref["results"][TASK]["acc,none"])
    flat = [x for row in cli_logliks for x in row]
    assert len(flat) == 4 * N_DOCS
    assert flat == pytest.approx([x for row in _logliks(ref) for x in row], abs=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_adapter_falls_back_to_cpu_for_lm_evals_default_cuda_device(tiny_model, tmp_path):
    """lm-eval's command line passes device="cuda:0" by default; a model path still loads on a CPU machine."""
    from interp_steer.evaluation.lm_eval_model import InterpSteerLM

    model_dir = tmp_path / "tiny"
    hf_twin(tiny_model).save_pretrained(model_dir)
    tiny_model.tokenizer.save_pretrained(model_dir)
    lm = InterpSteerLM(model=str(model_dir), device="cuda:0")
    assert str(lm.model.cfg.device) == "cpu"
    assert model_fingerprint(lm.model).config_hash == model_fingerprint(tiny_model).config_hash


@pytest.mark.slow
def test_simple_evaluate_real_model(model, task_manager):
    from interp_steer.evaluation.lm_eval_model import InterpSteerLM

    plain = _run(InterpSteerLM(model=model), task_manager)
    steered = _run(InterpSteerLM(model=model, vector=_vector(model, 200.0, hook="blocks.15.hook_resid_post"),
                                 strength=1.0), task_manager)
    acc0, acc1 = plain["results"][TASK]["acc,none"], steered["results"][TASK]["acc,none"]
    print(f"real model on {TASK}: acc {acc0:.3f} unsteered, {acc1:.3f} with a norm-200 random vector at layer 15; "
          f"acc_norm {plain['results'][TASK]['acc_norm,none']:.3f}")
    assert 0.0 <= acc0 <= 1.0 and plain["results"][TASK]["sample_len"] == N_DOCS
    base, moved = _logliks(plain), _logliks(steered)
    assert all(a != b for ra, rb in zip(base, moved, strict=True) for a, b in zip(ra, rb, strict=True))
    # the real model ranks the right answers better than a model with a wrecked residual stream does
    answers = [json.loads(line)["answer"] for line in (TASK_DIR / "knowledge.jsonl").read_text().splitlines()]

    def margin(rows):
        return sum(r[a] - max(x for j, x in enumerate(r) if j != a) for r, a in zip(rows, answers, strict=True))

    print(f"mean correct-choice margin: {margin(base) / N_DOCS:.3f} unsteered, {margin(moved) / N_DOCS:.3f} steered")
    assert margin(base) > margin(moved)
    assert sum(map(sum, moved)) < sum(map(sum, base))  # continuations become much less likely overall
