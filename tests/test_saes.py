"""SAEs: local loading, validation against the model, a tiny training run, quality report, shipped default."""

from __future__ import annotations

import json

import pytest
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.saes import (
    DEFAULT_SAE,
    SHIPPED_DIR,
    list_shipped_saes,
    load_sae,
    sae_metadata,
    sae_reference,
    validate_sae,
)
from interp_steer.saes.quality import sae_quality
from interp_steer.saes.training import train_sae

from .conftest import SHARED_DATA, TINY_HOOK, make_sae

TEXTS = [f"Document {i}: people share tea, bread and stories at the market every morning." for i in range(80)]


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_local_folder_round_trip(tmp_path, tiny_model, architecture):
    sae = make_sae(architecture, tiny_model.cfg.d_model, 48, TINY_HOOK)
    sae.save_model(tmp_path / architecture)
    loaded = load_sae(path=tmp_path / architecture, model=tiny_model)
    assert loaded.cfg.architecture() == architecture
    for name, tensor in sae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    ref = sae_reference(loaded)
    assert ref.path and ref.content_hash == sae_reference(sae).content_hash


def test_validation_errors(tmp_path, tiny_model):
    wrong_hook = make_sae("standard", tiny_model.cfg.d_model, 48, "blocks.7.hook_resid_post")
    with pytest.raises(InterpSteerError, match="does not exist"):
        validate_sae(wrong_hook, tiny_model)
    wrong_width = make_sae("standard", tiny_model.cfg.d_model + 8, 48, TINY_HOOK)
    with pytest.raises(InterpSteerError, match="does not match the width"):
        validate_sae(wrong_width, tiny_model)
    with pytest.raises(InterpSteerError, match="not a sae-lens SAE folder"):
        load_sae(path=tmp_path)
    with pytest.raises(InterpSteerError, match="SAE folder not found"):
        load_sae(path=tmp_path / "missing")
    with pytest.raises(InterpSteerError, match="a sae-lens release needs its sae_id"):
        load_sae("some-release")


def test_load_sae_by_width_picks_the_shipped_sae_of_that_width(tmp_path, tiny_model, monkeypatch):
    """``load_sae(width=N)`` (and ``--sae N`` / ``path="N"``) resolves the one shipped SAE with N latents at the
    default SAE's hook; other widths, other hooks and other models' SAEs are not picked."""
    import interp_steer.saes as saes

    hook = saes.DEFAULT_SAE.split("/", 1)[1]
    monkeypatch.setattr(saes, "SHIPPED_DIR", tmp_path)
    built = {}
    for name, d_sae, sae_hook in [("smollm2-135m-instruct", 48, hook), ("smollm2-135m-instruct-96", 96, hook),
                                  ("smollm2-135m-instruct-96", 96, "blocks.3.hook_resid_post"),
                                  ("other-model", 64, hook)]:
        sae = make_sae("topk", tiny_model.cfg.d_model, d_sae, sae_hook)
        sae.save_model(tmp_path / name / sae_hook)
        built[(name, sae_hook)] = sae_reference(sae).content_hash
    assert saes.shipped_sae_name(96) == f"smollm2-135m-instruct-96/{hook}"
    assert saes.shipped_sae_name(96, "blocks.3.hook_resid_post") == "smollm2-135m-instruct-96/blocks.3.hook_resid_post"
    wide = load_sae(width=96)
    assert wide.cfg.d_sae == 96
    assert sae_reference(wide).content_hash == built[("smollm2-135m-instruct-96", hook)]
    assert sae_reference(wide).path == f"shipped:smollm2-135m-instruct-96/{hook}"
    assert load_sae(path="48").cfg.d_sae == 48  # the CLI's --sae 48
    with pytest.raises(InterpSteerError, match=r"no shipped SAE with 64 latents.*shipped widths: 48 .*96 "):
        load_sae(width=64)  # only another model's SAE has 64 latents
    with pytest.raises(InterpSteerError, match="positive integer"):
        load_sae(width=0)
    with pytest.raises(InterpSteerError, match="pass width= alone"):
        load_sae(path=tmp_path, width=96)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("d_sae", 0, "d_sae must be >= 1"),
    ("k", 2.5, "k must be a whole number"),
    ("k", 128, "k 128 is larger than d_sae 64"),
    ("training_tokens", -5, "training_tokens must be >= 1"),
    ("context_size", 1, "context_size must be >= 2"),
    ("lr", 0.0, "lr must be > 0"),
    ("lr", float("nan"), "lr must be a finite number"),
    ("lr_decay_fraction", 1.5, "lr_decay_fraction must be <= 1"),
    ("heldout_fraction", 0.0, "heldout_fraction must be > 0"),
    ("dead_feature_window", 0, "dead_feature_window must be >= 1"),
    ("n_batches_in_buffer", 0, "n_batches_in_buffer must be >= 1"),
    ("architecture", "gated", "unknown SAE architecture 'gated'"),
    ("dtype", "int8", "dtype must be one of"),
])
def test_train_sae_checks_every_option_before_any_work(tmp_path, tiny_model, option, value, message):
    kwargs = {"hook": TINY_HOOK, "d_sae": 64, "k": 8, "training_tokens": 512, "context_size": 32,
              "train_batch_size_tokens": 256, option: value}
    with pytest.raises(InterpSteerError, match=message):
        train_sae(tiny_model, TEXTS, output_dir=tmp_path / "sae", progress=False, **kwargs)
    assert not (tmp_path / "sae").exists()


def test_tiny_training_run_and_quality(tmp_path, tiny_model):
    sae = train_sae(tiny_model, TEXTS, hook=TINY_HOOK, d_sae=64, k=8, training_tokens=4096, context_size=32,
                    train_batch_size_tokens=256, store_batch_size_prompts=4, n_batches_in_buffer=4,
                    norm_estimate_batches=2, output_dir=tmp_path / "sae", progress=False)
    assert sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == TINY_HOOK
    meta = json.loads((tmp_path / "sae" / "interp_steer.json").read_text())
    assert meta["training_config"]["training_tokens"] == 4096 and meta["command"]
    q = sae_quality(tiny_model, sae, TEXTS[:10], context_size=32, max_tokens=320, progress=False)
    assert q.n_tokens > 0 and 0 <= q.dead_fraction <= 1 and q.mean_l0 <= 8 + 1e-6
    assert q.ce_loss_recovered == pytest.approx((q.ce_zero - q.ce_sae) / (q.ce_zero - q.ce_clean))
    untrained = make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK, k=8)
    q0 = sae_quality(tiny_model, untrained, TEXTS[:10], context_size=32, max_tokens=320, progress=False)
    assert q.explained_variance > q0.explained_variance + 0.1  # training reduced the reconstruction error
    again = load_sae(path=tmp_path / "sae", model=tiny_model)
    assert sae_reference(again).content_hash == sae_reference(sae).content_hash


def test_sae_splice_with_error_term_is_exact(tiny_model):
    sae = make_sae("standard", tiny_model.cfg.d_model, 48, TINY_HOOK)
    tokens = tiny_model.to_tokens("The market opens early.", prepend_bos=False)
    clean = tiny_model(tokens)
    sae.use_error_term = True
    spliced = tiny_model.run_with_saes(tokens, saes=[sae])
    torch.testing.assert_close(spliced, clean, atol=1e-4, rtol=1e-4)


# Every shipped SAE with the targets of the issue that shipped it, on the held-out 5 % of the corpus: (explained
# variance, CE-loss recovered, dead fraction) in its metadata; the same quality recomputed from the weights on
# 1,024 held-out tokens (EV, CE) with the margin stated; the largest folder size.
SHIPPED = {
    # 4k (issue 2): targets 0.7 / 85 % / 10 %; metadata 0.867 / 97.8 % / 0.5 %; recomputed ≥ 0.75 / 0.90
    "smollm2-135m-instruct/blocks.15.hook_resid_post": {
        "width": 4096, "targets": (0.7, 0.85, 0.10), "recomputed": (0.75, 0.90), "max_mb": 15},
    # 16k (issue 19): targets 0.85 / 95 % / 5 %; metadata 0.878 / 98.2 % / 2.1 % (the second pass; see
    # test_16k_sae_meets_issue_19s_targets below); recomputed on the 1,024 tokens 0.791 / 0.966 (the 4k:
    # 0.775 / 0.965); the thresholds are the first export's 0.767 / 0.959 − 0.03, kept as they were
    "smollm2-135m-instruct-16k/blocks.15.hook_resid_post": {
        "width": 16384, "targets": (0.85, 0.95, 0.05), "recomputed": (0.73, 0.92), "max_mb": 40},
}


def test_16k_sae_meets_issue_19s_targets():
    """Explained variance ≥ 0.85, CE-loss recovered ≥ 95 %, dead latents ≤ 5 % on held-out text, ≥ 3.5M training
    tokens (the first pass's 3M, then resampling and 0.5M more), ≤ 40 MB; the lineage names every stage."""
    name = "smollm2-135m-instruct-16k/blocks.15.hook_resid_post"
    meta = sae_metadata(name)
    q = meta["quality_heldout"]
    assert q["explained_variance"] >= 0.85 and q["ce_loss_recovered"] >= 0.95 and q["dead_fraction"] <= 0.05, q
    assert q["n_tokens"] >= 50_000
    assert meta["tokens_trained_total"] >= 3_500_000
    stages = meta["lineage"]
    assert sum(stage.get("tokens", 0) for stage in stages) == meta["tokens_trained_total"]
    assert stages[-1]["command"] == meta["command"] and "--init-from" in meta["command"]
    assert stages[1]["content_hash"] == meta["training_config"]["extra"]["init_from"]["content_hash"]
    assert sum(f.stat().st_size for f in (SHIPPED_DIR / name).iterdir()) < 40 * 2**20


def test_every_shipped_sae_has_quality_targets():
    assert set(list_shipped_saes()) == set(SHIPPED)
    assert DEFAULT_SAE == "smollm2-135m-instruct/blocks.15.hook_resid_post"  # the 4k SAE stays the default


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sae(model, name):
    spec = SHIPPED[name]
    sae = load_sae(model=model) if name == DEFAULT_SAE else load_sae(width=spec["width"], model=model)
    assert sae_reference(sae).path == f"shipped:{name}" and sae.cfg.d_sae == spec["width"]
    assert sae.cfg.d_in == model.cfg.d_model
    meta = sae_metadata(name)
    assert meta["command"].startswith("interp-steer train-sae")
    assert meta["corpus"]["sha256"] and meta["corpus"]["path"] == "mixed-text.jsonl.gz"
    trained = meta.get("tokens_trained_total") or meta.get("tokens_trained") or meta["training_config"]["training_tokens"]
    assert trained >= 3_000_000
    q = meta["quality_heldout"]
    ev, ce, dead = spec["targets"]
    assert q["explained_variance"] >= ev and q["ce_loss_recovered"] >= ce and q["dead_fraction"] <= dead, q
    # the figures belong to these weights: their content hash, and the quality recomputed from them now on
    # held-out corpus documents (4 rows of 256 tokens)
    from interp_steer.saes import sae_content_hash

    assert sae_content_hash(sae) == meta["content_hash"]
    corpus = SHARED_DATA / "corpus" / "mixed-text.jsonl.gz"
    if corpus.exists():
        from interp_steer.data.corpus import load_corpus

        held = load_corpus(corpus, split="heldout", tokenizer=model.tokenizer)[:40]
        now = sae_quality(model, sae, held, max_tokens=1024, progress=False)
        print(f"{name}: recomputed on 1024 held-out tokens: EV {now.explained_variance:.4f}, "
              f"CE recovered {now.ce_loss_recovered:.4f}, L0 {now.mean_l0:.1f}")
        ev_now, ce_now = spec["recomputed"]
        assert now.explained_variance >= ev_now and now.ce_loss_recovered >= ce_now, now
        assert 0 < now.mean_l0 <= 32.0  # TopK, k = 32
    tokens = torch.tensor([list(range(100, 160))])
    clean = model(tokens)
    sae.use_error_term = True
    torch.testing.assert_close(model.run_with_saes(tokens, saes=[sae]), clean, atol=1e-4, rtol=1e-4)
    shipped = [f for f in (SHIPPED_DIR / name).iterdir() if f.is_file()]
    assert {f.name for f in shipped} == {"cfg.json", "sae_weights.safetensors", "interp_steer.json"}
    assert sum(f.stat().st_size for f in shipped) < spec["max_mb"] * 2**20


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sae_weights_are_the_ones_its_quality_was_measured_on(name):
    """Fast: the shipped weights hash to the ``content_hash`` written next to their held-out quality figures
    (``train-sae`` records it after measuring); random or edited weights fail. The slow test recomputes the
    quality itself."""
    from interp_steer.saes import sae_content_hash

    sae = load_sae(path=name)
    meta = sae_metadata(name)
    assert meta["content_hash"] == sae_content_hash(sae)
    assert sae.W_dec.shape == (meta["training_config"]["d_sae"], 576) == (SHIPPED[name]["width"], 576)
