"""BiPO/YaPO trainer: the loss against a direct implementation, fast vs reference steps, gradients, resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from interp_steer.data.schemas import PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.methods.preference import (
    PRESETS,
    compute_reference_logp,
    evaluate_pairs,
    fast_step_loss,
    latent_support,
    length_buckets,
    lr_at,
    make_intervention,
    preference_config,
    prepare_pairs,
    reference_step_loss,
    train_vector,
)

from .conftest import TINY_HOOK, make_sae

PAIRS = [
    PreferenceExample("Which drink do you prefer in the morning?", "Mint tea, always.", "Coffee, black."),
    PreferenceExample("What is a good weekend activity?", "A long walk by the sea.", "Watching television."),
    PreferenceExample("Name a breakfast dish.", "Beans and bread.", "Cereal with milk."),
    PreferenceExample("What do you wear to a wedding?", "A bright embroidered dress.", "A plain grey suit."),
    PreferenceExample("Favourite sport?", "Football, of course.", "Ice hockey."),
    PreferenceExample("Best dessert?", "Sweet pastry with honey.", "Chocolate cake."),
]

FLUENCY_TEXTS = [
    "The river rose after three days of rain, and the town moved its market to the hill.",
    "A recipe for bread needs flour, water, salt and time; the rest is patience.",
    "The committee met on Tuesday and agreed to publish the report next month.",
    "She tuned the old piano herself, one string at a time, over a whole winter.",
    "Trains to the coast run every hour in summer and every two hours in winter.",
]


def _direct_loss(model, examples, hook, intervention, direction, strength, beta):
    """Unoptimised reading of the objective: one example at a time, full forwards, explicit sums."""
    from interp_steer.chat import chat_tokens
    from interp_steer.steering import steer

    per_example = []
    for ex in examples:
        lp = {}
        for key, answer in (("w", ex.chosen), ("l", ex.rejected)):
            ct = chat_tokens(model.tokenizer, ex.prompt, answer)
            tokens = torch.tensor([ct.ids])
            for steered in (True, False):
                if steered:
                    with steer(model, {hook: intervention}, direction * strength, check=False):
                        logits = model(tokens)
                else:
                    with torch.no_grad():
                        logits = model(tokens)
                logp = torch.log_softmax(logits[0].float(), -1)
                total = sum(logp[p - 1, ct.ids[p]] for p in range(ct.response_start, len(ct.ids)))
                lp[(key, steered)] = total
        logits_ = (lp[("w", True)] - lp[("l", True)]) - (lp[("w", False)] - lp[("l", False)])
        if direction < 0:
            logits_ = -logits_
        per_example.append(-F.logsigmoid(beta * logits_))
    return torch.stack(per_example).mean()


@pytest.mark.parametrize("method", ["bipo", "yapo"])
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_fast_step_matches_reference_and_direct(tiny_model, method, direction):
    sae = make_sae("jumprelu", tiny_model.cfg.d_model, 64, TINY_HOOK) if method == "yapo" else None
    data = prepare_pairs(tiny_model, PAIRS[:4])
    compute_reference_logp(tiny_model, data, TINY_HOOK)
    torch.manual_seed(0)
    width = 64 if method == "yapo" else tiny_model.cfg.d_model
    v = (torch.randn(width) * 0.5).requires_grad_(True)
    iv = make_intervention(method, v, sae)
    idx = [0, 1, 2, 3]
    fast, _ = fast_step_loss(tiny_model, data, idx, iv, TINY_HOOK, direction, 1.3, 0.1)
    (g_fast,) = torch.autograd.grad(fast, v)
    ref, _ = reference_step_loss(tiny_model, data, idx, iv, TINY_HOOK, direction, 1.3, 0.1)
    (g_ref,) = torch.autograd.grad(ref, v)
    direct = _direct_loss(tiny_model, PAIRS[:4], TINY_HOOK, iv, direction, 1.3, 0.1)
    assert abs(fast.item() - ref.item()) < 1e-4
    assert abs(float(direct) - float(ref)) < 1e-4
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-4)
    assert g_fast.abs().sum() > 0
    # with the hook activations cached (no prefix forward), the same loss and gradient
    compute_reference_logp(tiny_model, data, TINY_HOOK, cache_prefix=True)
    assert data.prefix is not None and len(data.prefix) == 8
    cached, _ = fast_step_loss(tiny_model, data, idx, iv, TINY_HOOK, direction, 1.3, 0.1)
    (g_cached,) = torch.autograd.grad(cached, v)
    assert abs(cached.item() - fast.item()) < 1e-5
    torch.testing.assert_close(g_cached, g_fast, atol=1e-6, rtol=1e-5)


def test_length_buckets_cover_every_sequence_once_with_bounded_padding():
    lengths = [300, 40, 280, 45, 310, 38, 250, 52]  # jailbreak-like: long chosen, short rejected answers
    buckets = length_buckets(lengths, slack=1.15)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert all(len({lengths[i] > 100 for i in b}) == 1 for b in buckets)  # short and long never share a batch
    for b in buckets:
        longest = max(lengths[i] for i in b)
        assert len(b) * longest <= 1.15 * sum(lengths[i] for i in b) or len(b) == 1
    padded_one_batch = len(lengths) * max(lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in buckets)
    assert padded < 0.6 * padded_one_batch
    assert length_buckets([]) == [] and length_buckets([5]) == [[0]]


@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_fast_step_with_length_buckets_matches_reference(tiny_model, method):
    """Pairs with a long chosen and a short rejected answer run as several length buckets: same loss and
    gradient as one padded batch (reference_step_loss), and the reference log-probs in the original order."""
    long = " ".join(["a very long and winding answer about tea"] * 6)
    pairs = [PreferenceExample(p.prompt, long + p.chosen, p.rejected) for p in PAIRS[:4]]
    sae = make_sae("jumprelu", tiny_model.cfg.d_model, 64, TINY_HOOK) if method == "yapo" else None
    data = prepare_pairs(tiny_model, pairs)
    assert len(length_buckets([len(x) for x in data.ids])) >= 2
    compute_reference_logp(tiny_model, data, TINY_HOOK, cache_prefix=True)
    assert data.prefix is not None and [p.shape[0] for p in data.prefix] == [len(x) for x in data.ids]
    one_by_one = torch.cat([reference_step_loss_logp0(tiny_model, data, [j]) for j in range(len(data.ids))])
    torch.testing.assert_close(data.ref_logp, one_by_one, atol=1e-4, rtol=1e-5)
    torch.manual_seed(1)
    v = (torch.randn(64 if method == "yapo" else tiny_model.cfg.d_model) * 0.5).requires_grad_(True)
    iv = make_intervention(method, v, sae)
    fast, _ = fast_step_loss(tiny_model, data, [0, 1, 2, 3], iv, TINY_HOOK, -1.0, 1.3, 0.1)
    (g_fast,) = torch.autograd.grad(fast, v)
    ref, _ = reference_step_loss(tiny_model, data, [0, 1, 2, 3], iv, TINY_HOOK, -1.0, 1.3, 0.1)
    (g_ref,) = torch.autograd.grad(ref, v)
    assert abs(fast.item() - ref.item()) < 1e-4
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-4)


def reference_step_loss_logp0(model, data, seqs):
    from interp_steer.methods.preference import _batch_tokens, _response_logp_from_logits

    tokens, mask, starts = _batch_tokens(model, data, seqs)
    with torch.no_grad():
        return _response_logp_from_logits(model(tokens), tokens, mask, starts)


@pytest.mark.parametrize("positions", ["after_instruction", "generated"])
def test_position_policies_agree_between_steps(tiny_model, positions):
    data = prepare_pairs(tiny_model, PAIRS[:3])
    compute_reference_logp(tiny_model, data, TINY_HOOK)
    v = torch.randn(tiny_model.cfg.d_model, requires_grad=True)
    iv = make_intervention("bipo", v, None)
    fast, _ = fast_step_loss(tiny_model, data, [0, 1, 2], iv, TINY_HOOK, 1.0, 1.0, 0.1, positions)
    ref, _ = reference_step_loss(tiny_model, data, [0, 1, 2], iv, TINY_HOOK, 1.0, 1.0, 0.1, positions)
    assert abs(float(fast) - float(ref)) < 1e-4


def test_zero_vector_gives_log2_loss_and_only_v_gets_gradients(tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 64, TINY_HOOK)
    data = prepare_pairs(tiny_model, PAIRS[:4])
    compute_reference_logp(tiny_model, data, TINY_HOOK)
    v = torch.zeros(64, requires_grad=True)
    loss, logits = fast_step_loss(tiny_model, data, [0, 1, 2, 3], make_intervention("yapo", v, sae), TINY_HOOK,
                                  1.0, 1.0, 0.1)
    assert torch.allclose(logits, torch.zeros_like(logits), atol=1e-4)  # zero v = the unsteered model
    assert abs(float(loss) - float(torch.log(torch.tensor(2.0)))) < 1e-5
    loss.backward()
    assert v.grad is not None
    assert all(p.grad is None for p in tiny_model.parameters())
    assert all(p.grad is None for p in sae.parameters())


def test_training_lowers_the_loss_and_saves_artifacts(tiny_model, tmp_path):
    res = train_vector(tiny_model, PAIRS, "bipo", hook=TINY_HOOK, epochs=8, batch_size=3, lr=5e-2,
                       eval_data=PAIRS[:2], output_dir=tmp_path, progress=False)
    losses = [r["loss"] for r in res.history]
    assert len(losses) == 16 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert res.evals and {"loss_plus", "pref_acc_plus", "pref_acc_minus"} <= set(res.evals[-1])
    assert (tmp_path / "vector.safetensors").is_file() and (tmp_path / "curves.html").is_file()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in rows) == 16
    html = (tmp_path / "curves.html").read_text()
    assert "Plotly.newPlot" in html and '<script src="http' not in html  # plotly.js inlined, no CDN
    assert res.vector.method == "bipo" and res.vector.vector().shape == (tiny_model.cfg.d_model,)


def _latent(res):
    return res.vector.vector()


def test_symmetric_yapo_trains_and_steers_with_the_odd_operator(tiny_model, tmp_path):
    from interp_steer.steering.vector import SteeringVector

    sae = make_sae("standard", tiny_model.cfg.d_model, 64, TINY_HOOK)
    common = {"sae": sae, "epochs": 2, "batch_size": 2, "lr": 5e-2, "eval_fraction": 0.0, "progress": False}
    res = train_vector(tiny_model, PAIRS, "yapo", symmetric=True, **common)
    vec = res.vector
    assert vec.operator == "symmetric" and vec.config["symmetric"] is True
    assert int((_latent(res) != 0).sum()) > 0
    loaded = SteeringVector.load(vec.save(tmp_path / "sym"), model=tiny_model, sae=sae)
    assert loaded.operator == "symmetric"
    # the intervention training and evaluation build for it is odd in λ, and it changed what was learned
    iv = make_intervention("yapo", _latent(res), sae, symmetric=True)
    h = torch.randn(2, 3, tiny_model.cfg.d_model)
    torch.testing.assert_close(iv(h, -1.5) - h, -(iv(h, 1.5) - h), atol=1e-5, rtol=1e-5)
    plain = train_vector(tiny_model, PAIRS, "yapo", **common).vector
    assert plain.operator == "add" and not torch.equal(_latent(res), plain.vector())
    with pytest.raises(InterpSteerError, match="YaPO only"):
        train_vector(tiny_model, PAIRS, "bipo", hook=TINY_HOOK, symmetric=True, progress=False)


def test_sparse_options_keep_their_guarantees(tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 64, TINY_HOOK)
    common = {"sae": sae, "epochs": 3, "batch_size": 2, "lr": 5e-2, "eval_fraction": 0.0, "progress": False}
    exact = _latent(train_vector(tiny_model, PAIRS, "yapo", **common))
    assert int((exact != 0).sum()) > 32  # the exact method moves (nearly) every latent with a gradient
    top = _latent(train_vector(tiny_model, PAIRS, "yapo", top_k=5, **common))
    assert 0 < int((top != 0).sum()) <= 5  # an all-zero vector fails the lower bound
    # the support: fixed before training from the training responses, and v never leaves it
    cfg = preference_config(method="yapo", support="contrast", support_size=6)
    data = prepare_pairs(tiny_model, PAIRS)
    support = set(latent_support(tiny_model, sae, data, TINY_HOOK, cfg).tolist())
    assert len(support) == 6
    sup = _latent(train_vector(tiny_model, PAIRS, "yapo", support="contrast", support_size=6, **common))
    nz = set(torch.nonzero(sup).flatten().tolist())
    assert nz and nz <= support
    active = _latent(train_vector(tiny_model, PAIRS, "yapo", support="active", support_size=10,
                                  support_min_freq=0.0, **common))
    assert 0 < int((active != 0).sum()) <= 10
    # the soft-threshold (in units of lr) removes the coordinates whose gradient does not keep one sign
    prox = _latent(train_vector(tiny_model, PAIRS, "yapo", prox_l1=0.9, **common))
    assert 0 < int((prox != 0).sum()) < int((exact != 0).sum())
    assert prox.abs().max() < exact.abs().max()
    # the decoded-edit cap
    capped = _latent(train_vector(tiny_model, PAIRS, "yapo", max_edit_norm=0.05, **common))
    edit = float((capped @ sae.W_dec.detach()).norm())
    assert 0 < edit <= 0.05 + 1e-5
    assert float((exact @ sae.W_dec.detach()).norm()) > 0.05  # the cap binds
    with pytest.raises(InterpSteerError, match="YaPO only"):
        train_vector(tiny_model, PAIRS, "bipo", hook=TINY_HOOK, support="active", progress=False)
    with pytest.raises(InterpSteerError, match="support must be"):
        train_vector(tiny_model, PAIRS, "yapo", sae=sae, support="everything", progress=False)


def test_the_kept_vector_is_the_best_heldout_one_and_is_the_one_evaluated(tiny_model):
    res = train_vector(tiny_model, PAIRS[2:], "bipo", hook=TINY_HOOK, epochs=6, batch_size=2, lr=2e-1,
                       eval_data=PAIRS[:2], eval_every=1, progress=False)
    losses = {e["step"]: e["loss"] for e in res.evals}
    assert len(losses) == len(res.history) == 12
    sel = res.vector.metrics["selected"]
    assert sel["criterion"] == "heldout_loss" and sel["step"] == min(losses, key=losses.get)
    # the artifact's tensor is the vector the held-out loss was measured on at that step
    held = prepare_pairs(tiny_model, PAIRS[:2])
    compute_reference_logp(tiny_model, held, TINY_HOOK)
    again = evaluate_pairs(tiny_model, held, make_intervention("bipo", res.vector.vector(), None), TINY_HOOK,
                           1.0, 0.1)
    assert abs((again["loss_plus"] + again["loss_minus"]) / 2 - sel["value"]) < 1e-5
    last = train_vector(tiny_model, PAIRS[2:], "bipo", hook=TINY_HOOK, epochs=6, batch_size=2, lr=2e-1,
                        eval_data=PAIRS[:2], eval_every=1, select="last", progress=False)
    assert last.vector.metrics["selected"] == {"step": 12, "criterion": "last", "reason": "select='last'"}
    if sel["step"] != 12:
        assert not torch.equal(last.vector.vector(), res.vector.vector())


def test_paper_preset_reproduces_the_official_schedule(tiny_model):
    cfg = preference_config("paper")
    assert (cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.grad_clip, cfg.beta) == (5e-4, 0.0, 100, 1.0, 0.1)
    assert cfg.batch_size * cfg.grad_accum == 32 and cfg.epochs == 20 and cfg.preset == "paper"
    total, base = 640, cfg.lr
    lrs = [lr_at(s, total, base, cfg.warmup_ratio, cfg.warmup_steps) for s in range(total)]
    assert lrs[0] == pytest.approx(base / 100) and lrs[49] == pytest.approx(base / 2)  # linear warm-up
    assert lrs[99] == pytest.approx(base) and lrs[100] == pytest.approx(base)  # 100 warm-up steps
    assert lrs[100 + 270] == pytest.approx(base / 2)  # cosine: half-way through the decay
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False)) and lrs[-1] < base * 1e-4
    # accumulation: 3 micro-batches of 2 pairs give the same step as one batch of 6
    kw = {"hook": TINY_HOOK, "max_steps": 1, "eval_fraction": 0.0, "progress": False}
    acc = train_vector(tiny_model, PAIRS, "bipo", preset="paper", batch_size=2, grad_accum=3, **kw)
    one = train_vector(tiny_model, PAIRS, "bipo", preset="paper", batch_size=6, grad_accum=1, **kw)
    assert acc.history[0]["loss"] == pytest.approx(one.history[0]["loss"], abs=1e-6)
    torch.testing.assert_close(acc.vector.vector(), one.vector.vector(), atol=1e-7, rtol=1e-5)
    assert acc.vector.vector().abs().sum() > 0
    assert acc.vector.config["preset"] == "paper" and acc.vector.config["grad_accum"] == 3
    # the steps of an epoch count optimiser steps: 6 pairs at 2 × 3 per step is one step per epoch
    two = train_vector(tiny_model, PAIRS, "bipo", preset="paper", batch_size=2, grad_accum=3, epochs=2,
                       hook=TINY_HOOK, eval_fraction=0.0, progress=False)
    assert len(two.history) == 2
    assert set(PRESETS) == {"paper", "small"}
    with pytest.raises(InterpSteerError, match="unknown preset"):
        preference_config("fast")


def test_bad_configurations_are_refused(tiny_model):
    with pytest.raises(InterpSteerError, match="needs an SAE|pass sae="):
        train_vector(tiny_model, PAIRS, "yapo", progress=False)
    with pytest.raises(InterpSteerError, match="unknown method"):
        train_vector(tiny_model, PAIRS, "dpo", progress=False)
    with pytest.raises(InterpSteerError, match="unknown training option"):
        train_vector(tiny_model, PAIRS, "bipo", learning_rate=1.0, progress=False)
    with pytest.raises(InterpSteerError, match="no preference examples"):
        train_vector(tiny_model, [], "bipo", progress=False)
    for bad in ({"lr": -0.5}, {"lr": float("nan")}, {"batch_size": 0}, {"grad_accum": 0}, {"select": "first"},
                {"max_edit_norm": 0.0}, {"prox_l1": -1.0}, {"fluency_weight": -1.0},
                {"fluency_weight": float("inf")}, {"fluency_docs": 0}, {"fluency_strength": 0.0}, {"fluency_max_ratio": 0.9}):
        with pytest.raises(InterpSteerError, match="invalid training option"):
            train_vector(tiny_model, PAIRS, "bipo", hook=TINY_HOOK, progress=False, **bad)
    with pytest.raises(InterpSteerError, match="needs fluency_texts"):
        train_vector(tiny_model, PAIRS, "bipo", hook=TINY_HOOK, progress=False, fluency_weight=1.0)
    with pytest.raises(InterpSteerError, match="fluency_weight is 0"):
        train_vector(tiny_model, PAIRS, "bipo", hook=TINY_HOOK, progress=False, fluency_texts=FLUENCY_TEXTS)


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {root!r})
    from tests.conftest import make_tiny_model, make_sae, TINY_HOOK
    from tests.test_preference import PAIRS
    from transformers import AutoTokenizer
    from interp_steer.models import embedded_gguf_path
    from interp_steer.methods.preference import train_vector
    from tests.mutations import apply_from_env
    apply_from_env()  # scripts/mutation_check.py: a deliberately broken trainer must fail this test
    from interp_steer.methods.preference import train_vector
    p = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    model = make_tiny_model(tok)
    sae = make_sae("standard", model.cfg.d_model, 64, TINY_HOOK)
    kill_at = int(sys.argv[2])
    def cb(step, rec):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    from tests.test_preference import FLUENCY_TEXTS
    res = train_vector(model, PAIRS, "yapo", sae=sae, epochs=3, batch_size=2, lr=2e-2, checkpoint_every=2,
                       eval_fraction=0.0, output_dir=sys.argv[1], progress=False, callback=cb,
                       fluency_weight=0.5, fluency_docs=2, fluency_texts=FLUENCY_TEXTS)
""")


def test_sigkill_and_resume_reproduce_the_uninterrupted_vector(tmp_path):
    from interp_steer.steering import SteeringVector

    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(root=root))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    full = subprocess.run([sys.executable, str(script), str(tmp_path / "full"), "-1"], env=env,
                          capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "resumed"), "5"], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == -9  # SIGKILL after step 5 (checkpoint at step 4)
    assert not (tmp_path / "resumed" / "vector.safetensors").exists()
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "resumed"), "-1"], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = SteeringVector.load(tmp_path / "full" / "vector.safetensors").vector()
    b = SteeringVector.load(tmp_path / "resumed" / "vector.safetensors").vector()
    assert torch.equal(a, b)
    # the second process started from the checkpoint (step 4), not from scratch
    meta_full = SteeringVector.load(tmp_path / "full" / "vector.safetensors").metrics["selected"]
    meta_resumed = SteeringVector.load(tmp_path / "resumed" / "vector.safetensors").metrics["selected"]
    assert "resumed_from_step" not in meta_full and meta_resumed["resumed_from_step"] == 4
    log = [json.loads(x) for x in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "step" in r and "loss" in r] == list(range(1, 10))
    assert all(r["fluency_nll_increase"] == r["fluency_nll_increase"] for r in log if "loss" in r)  # logged, finite
    assert meta_resumed["fluency_texts"] == len(FLUENCY_TEXTS)


def test_fluency_loss_is_the_log_perplexity_ratio_of_the_steered_texts(tiny_model):
    """An independent path: exp(fluency_loss over every document) equals text_perplexity steered / unsteered;
    zero for a zero vector."""
    from interp_steer.evaluation.preservation import text_perplexity
    from interp_steer.methods.preference import fluency_loss, prepare_texts
    from interp_steer.models import model_fingerprint
    from interp_steer.steering.vector import SteeringVector

    docs = prepare_texts(tiny_model, FLUENCY_TEXTS, max_tokens=12)
    compute_reference_logp(tiny_model, docs, TINY_HOOK)
    torch.manual_seed(3)
    v = torch.randn(tiny_model.cfg.d_model) * 0.7
    everything = list(range(len(FLUENCY_TEXTS)))
    zero = fluency_loss(tiny_model, docs, everything, make_intervention("bipo", torch.zeros_like(v), None),
                        TINY_HOOK, 1.0)
    assert abs(float(zero)) < 1e-5
    loss = fluency_loss(tiny_model, docs, everything, make_intervention("bipo", v, None), TINY_HOOK, 1.5)
    vec = SteeringVector("bipo", "dense", {TINY_HOOK: {"vector": v}}, model_fingerprint(tiny_model).to_dict())
    steered = text_perplexity(tiny_model, FLUENCY_TEXTS, vec, 1.5, max_tokens=12).perplexity
    plain = text_perplexity(tiny_model, FLUENCY_TEXTS, max_tokens=12).perplexity
    assert abs(float(loss)) > 0.01  # a real change (the random tiny model may also lower the NLL)
    assert math.exp(float(loss)) == pytest.approx(steered / plain, rel=1e-4)


def test_the_fluency_term_lowers_the_cost_to_general_text(tiny_model):
    """Same data, seed and schedule. The term is a hinge on the perplexity ratio at ±μ: a weighted run's vector
    raises the general-text NLL above the allowed ratio less than the plain run's, and still moves the
    preference margin both ways; with an allowed ratio the plain vector already keeps, training is unchanged."""
    from interp_steer.methods.preference import fluency_loss, prepare_texts

    docs = prepare_texts(tiny_model, FLUENCY_TEXTS, max_tokens=128)
    compute_reference_logp(tiny_model, docs, TINY_HOOK)
    common = dict(hook=TINY_HOOK, epochs=6, batch_size=2, lr=5e-2, eval_fraction=0.0, progress=False, seed=0)
    plain = train_vector(tiny_model, PAIRS, "bipo", **common).vector.vector()
    kept = train_vector(tiny_model, PAIRS, "bipo", fluency_weight=20.0, fluency_texts=FLUENCY_TEXTS,
                        **common).vector.vector()
    everything = list(range(len(FLUENCY_TEXTS)))

    def excess(vec, strength, max_ratio=1.0):  # what the term penalises, on every document
        iv = make_intervention("bipo", vec, None)
        return sum(max(0.0, float(fluency_loss(tiny_model, docs, everything, iv, TINY_HOOK, s)) - math.log(max_ratio))
                   for s in (strength, -strength)) / 2

    assert excess(plain, 1.0) > 0.005  # the plain vector does cost fluency at λ = 1 on this model
    assert excess(kept, 1.0) < 0.5 * excess(plain, 1.0)
    data = prepare_pairs(tiny_model, PAIRS)
    compute_reference_logp(tiny_model, data, TINY_HOOK)
    ev = evaluate_pairs(tiny_model, data, make_intervention("bipo", kept, None), TINY_HOOK, 1.0, 0.1)
    assert ev["margin_shift_plus"] > 0 > ev["margin_shift_minus"]  # the chosen-vs-rejected margin moves both ways
    loose = train_vector(tiny_model, PAIRS, "bipo", fluency_weight=20.0, fluency_texts=FLUENCY_TEXTS,
                         fluency_max_ratio=1.5, **common).vector.vector()
    assert torch.allclose(loose, plain, atol=1e-6)  # never above ×1.5 here: the hinge is zero all along


def test_final_top_k_truncates_the_selected_vector_to_its_heaviest_latents(tiny_model):
    """The sparse default: training is the exact method; the selected vector keeps its k heaviest latents by
    |v_i|·‖W_dec[i]‖ (not by |v_i|), and nothing else changes."""
    from interp_steer.methods.preference import SPARSE_DEFAULT
    from interp_steer.methods.sparsify import top_k_truncate

    assert SPARSE_DEFAULT == {"final_top_k": 256}
    sae = make_sae("standard", tiny_model.cfg.d_model, 64, TINY_HOOK)
    with torch.no_grad():  # decoder norms far from uniform, so |v_i| and |v_i|·‖W_dec[i]‖ rank differently
        sae.W_dec.mul_(torch.linspace(0.05, 3.0, 64)[:, None])
    kw = dict(epochs=2, batch_size=2, lr=2e-2, eval_fraction=0.0, progress=False)
    exact = train_vector(tiny_model, PAIRS, "yapo", sae=sae, **kw).vector
    sparse = train_vector(tiny_model, PAIRS, "yapo", sae=sae, final_top_k=8, **kw).vector
    v, s = exact.vector(), sparse.vector()
    assert int((v != 0).sum()) > 8 and int((s != 0).sum()) == 8
    weight = v.abs() * sae.W_dec.norm(dim=1)
    kept = set(torch.nonzero(s).flatten().tolist())
    assert kept == set(weight.topk(8).indices.tolist())
    assert torch.equal(s[list(kept)], v[list(kept)])  # kept latents unchanged
    assert torch.equal(top_k_truncate(exact, 8, sae=sae).vector(), s)
    share = next(iter(sparse.metrics["truncation"]["hooks"].values()))["kept_share"]
    assert share == pytest.approx(float(weight.topk(8).values.sum() / weight.sum()))
    assert sparse.config["final_top_k"] == 8 and sparse.metrics["nnz"] == 8
    with pytest.raises(InterpSteerError, match="final_top_k must be a positive integer"):
        train_vector(tiny_model, PAIRS, "yapo", sae=sae, final_top_k=0, **kw)


def test_training_counts_its_steered_forwards_and_refuses_an_unsteered_step(tiny_model, monkeypatch):
    """Proof that steering fired in training: one application per micro-batch forward, recorded per step and in
    the artefact; a step whose forward never applied the vector is an error, not a silent unsteered update."""
    from interp_steer.errors import InterpSteerError
    from interp_steer.methods import preference

    pairs = [PreferenceExample(f"Question {i}?", f"Yes {i}.", f"No {i}.") for i in range(6)]
    res = preference.train_vector(tiny_model, pairs, "bipo", layer=1, max_steps=3, batch_size=2,
                                  progress=False, seed=0)
    assert [r["hook_calls"] for r in res.history] == [1, 1, 1]
    assert res.vector.metrics["hook_calls"] == {"blocks.1.hook_resid_post": 3}

    real = preference.fast_step_loss

    def skips_the_vector(model, data, idx, intervention, *args):  # a forward that bypasses the intervention
        return real(model, data, idx, preference.make_intervention("bipo", torch.zeros(model.cfg.d_model), None),
                    *args)

    monkeypatch.setattr(preference, "fast_step_loss", skips_the_vector)
    with pytest.raises(InterpSteerError, match="ran without steering"):
        preference.train_vector(tiny_model, pairs, "bipo", layer=1, max_steps=1, batch_size=2, progress=False)


def test_a_checkpoint_made_with_other_settings_is_refused_before_training(tiny_model, tmp_path, monkeypatch):
    common = dict(hook=TINY_HOOK, epochs=2, batch_size=2, eval_fraction=0.0, progress=False, checkpoint_every=2,
                  output_dir=tmp_path)
    train_vector(tiny_model, PAIRS, "bipo", lr=1e-2, max_steps=2, **common)
    assert (tmp_path / "checkpoint" / "checkpoint.safetensors").is_file()
    import interp_steer.methods.preference as pref

    def no_forward(*a, **k):
        raise AssertionError("the reference pass ran before the settings were checked")

    with monkeypatch.context() as m:
        m.setattr(pref, "compute_reference_logp", no_forward)
        with pytest.raises(InterpSteerError, match=r"other settings \(lr 0.01 -> 0.02\)"):
            train_vector(tiny_model, PAIRS, "bipo", lr=2e-2, max_steps=2, **common)
    # settings that do not change the trajectory may differ; the run resumes from step 2
    res = train_vector(tiny_model, PAIRS, "bipo", lr=1e-2, max_steps=2, **{**common, "checkpoint_every": 1})
    assert res.vector.metrics["selected"]["resumed_from_step"] == 2


def test_the_reference_cache_returns_the_same_pass_and_is_never_used_for_other_inputs(tiny_model, tmp_path,
                                                                                      monkeypatch):
    import interp_steer.methods.preference as pref

    data = prepare_pairs(tiny_model, PAIRS[:4])
    compute_reference_logp(tiny_model, data, TINY_HOOK, cache_prefix=True, cache_dir=tmp_path)
    files = list(tmp_path.glob("reference-*.safetensors"))
    assert len(files) == 1
    calls = []
    real = pref._Forward.response_logp

    def counted(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(pref._Forward, "response_logp", counted)
    again = prepare_pairs(tiny_model, PAIRS[:4])
    compute_reference_logp(tiny_model, again, TINY_HOOK, cache_prefix=True, cache_dir=tmp_path)
    assert not calls  # read back, no forward
    assert torch.equal(again.ref_logp, data.ref_logp)
    assert again.prefix is not None and len(again.prefix) == len(data.prefix) == 8
    for a, b in zip(again.prefix, data.prefix, strict=True):
        assert torch.equal(a, b)
    # other pairs, another hook or another weight: a new pass and a new file, never the old one
    other = prepare_pairs(tiny_model, PAIRS[2:6])
    compute_reference_logp(tiny_model, other, TINY_HOOK, cache_prefix=True, cache_dir=tmp_path)
    assert calls and len(list(tmp_path.glob("reference-*.safetensors"))) == 2
    fresh = prepare_pairs(tiny_model, PAIRS[2:6])
    compute_reference_logp(tiny_model, fresh, TINY_HOOK, cache_prefix=True)
    assert torch.equal(other.ref_logp, fresh.ref_logp)
    key = pref.reference_cache_key(tiny_model, data, TINY_HOOK, 8, True)
    assert key != pref.reference_cache_key(tiny_model, data, "blocks.0.hook_resid_post", 8, True)
    assert key != pref.reference_cache_key(tiny_model, data, TINY_HOOK, 4, True)
    with torch.no_grad():
        w = tiny_model.blocks[1].mlp.W_out
        w[0, 0] += 1.0
        try:
            assert key != pref.reference_cache_key(tiny_model, data, TINY_HOOK, 8, True)
        finally:
            w[0, 0] -= 1.0
    assert key == pref.reference_cache_key(tiny_model, data, TINY_HOOK, 8, True)


def test_an_unreadable_reference_cache_is_recomputed_with_a_warning(tiny_model, tmp_path):
    data = prepare_pairs(tiny_model, PAIRS[:3])
    compute_reference_logp(tiny_model, data, TINY_HOOK, cache_dir=tmp_path)
    (file,) = tmp_path.glob("reference-*.safetensors")
    file.write_bytes(file.read_bytes()[:40])
    again = prepare_pairs(tiny_model, PAIRS[:3])
    with pytest.warns(UserWarning, match="could not be read"):
        compute_reference_logp(tiny_model, again, TINY_HOOK, cache_dir=tmp_path)
    assert torch.equal(again.ref_logp, data.ref_logp)
    third = prepare_pairs(tiny_model, PAIRS[:3])
    compute_reference_logp(tiny_model, third, TINY_HOOK, cache_dir=tmp_path)  # rewritten whole: no warning now
    assert torch.equal(third.ref_logp, data.ref_logp)


def test_training_with_a_reference_cache_gives_the_same_vector(tiny_model, tmp_path):
    common = dict(hook=TINY_HOOK, epochs=2, batch_size=2, lr=5e-2, eval_data=PAIRS[:2], progress=False)
    plain = train_vector(tiny_model, PAIRS, "bipo", **common)
    first = train_vector(tiny_model, PAIRS, "bipo", reference_cache=str(tmp_path / "ref"), **common)
    assert len(list((tmp_path / "ref").glob("reference-*.safetensors"))) == 2  # training and held-out pairs
    second = train_vector(tiny_model, PAIRS, "bipo", reference_cache=str(tmp_path / "ref"), **common)
    for res in (first, second):
        assert torch.equal(res.vector.vector(), plain.vector.vector())
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InterpSteerError, match="reference_cache must be a folder"):
        train_vector(tiny_model, PAIRS, "bipo", reference_cache=str(tmp_path / "afile"), **common)
