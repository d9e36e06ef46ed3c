"""Dead-latent resampling for TopK SAEs, and fine-tuning a trained SAE (``train_sae(init_from=...)``)."""

from __future__ import annotations

import json

import pytest
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.saes import load_sae
from interp_steer.saes.quality import sae_quality
from interp_steer.saes.resample import resample_dead_latents
from interp_steer.saes.training import sample_activations, tokenize_corpus, train_sae

from .conftest import TINY_HOOK, make_sae

TEXTS = [f"Document {i}: people share tea, bread and stories at the market every morning." for i in range(80)]


def _acts(n: int = 600, d: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(12, d, generator=g)
    codes = torch.randn(n, 12, generator=g).relu()
    return codes @ basis + 0.3 * torch.randn(n, d, generator=g)


def _kill(sae, latents):
    with torch.no_grad():
        sae.W_enc[:, latents] = 0
        sae.b_enc[latents] = -100.0  # pre-activation -100: never in the top k after ReLU


def _fires(sae, acts):
    return (sae.encode(acts) > 0).sum(0)


def _structured(rescale: bool = True, extra: int = 0):
    """Tokens made of 2 of 12 orthonormal directions, and a TopK SAE (k = 2) that knows the 12 directions plus
    ``extra`` random latents; latents 0-2 killed: the SAE has lost three directions."""
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 12, generator=g)).Q.T
    codes = torch.zeros(1200, 12)
    for t in range(1200):
        idx = torch.randperm(12, generator=g)[:2]
        codes[t, idx] = 1 + 4 * torch.rand(2, generator=g)
    sae = make_sae("topk", 32, 12 + extra, TINY_HOOK, k=2)
    sae.cfg.rescale_acts_by_decoder_norm = rescale
    with torch.no_grad():
        sae.W_dec[:12] = basis
        sae.W_enc[:, :12] = basis.T
        sae.b_enc[:12] = 0
        sae.b_enc[12:] = -1.0  # the random extras rarely fire
        sae.b_dec.zero_()
    _kill(sae, [0, 1, 2])
    return codes @ basis, codes, basis, sae


def test_resampled_latents_fire_and_live_ones_are_untouched():
    acts, _, basis, sae = _structured(extra=20)
    before = {n: t.clone() for n, t in sae.state_dict().items()}
    dead = (_fires(sae, acts) == 0).nonzero().flatten()
    assert {0, 1, 2} <= set(dead.tolist())
    report = resample_dead_latents(sae, acts, seed=0)
    assert report.dead_before == report.resampled == dead.numel()
    assert report.mean_cluster_size == pytest.approx(1200 / dead.numel())
    fires = _fires(sae, acts)
    # more dead latents (12) than lost directions (3): the new ones split the three among them, some stay idle
    assert report.dead_after == int((fires == 0).sum())
    # each lost direction is taken up by a new latent that fires
    cos = torch.nn.functional.normalize(sae.W_dec[dead], dim=-1) @ basis[:3].T
    for lost in range(3):
        best = dead[int(cos[:, lost].argmax())]
        assert float(cos[:, lost].max()) > 0.9 and fires[best] > 0
    assert report.explained_variance_after > report.explained_variance_before + 0.05
    live = torch.ones(32, dtype=torch.bool)
    live[dead] = False
    for name in ("W_enc", "b_enc", "W_dec"):
        new, old = sae.state_dict()[name], before[name]
        live_new = new[:, live] if name == "W_enc" else new[live]
        live_old = old[:, live] if name == "W_enc" else old[live]
        torch.testing.assert_close(live_new, live_old)
    torch.testing.assert_close(sae.b_dec, before["b_dec"])
    norm = before["W_dec"][live].norm(dim=-1).mean()  # new decoder rows at the live rows' mean norm
    torch.testing.assert_close(sae.W_dec[dead].norm(dim=-1), norm.expand(dead.numel()))


@pytest.mark.parametrize("rescale", [False, True])  # the shipped SAEs rescale by decoder norms
def test_resampling_finds_the_directions_the_sae_lost(rescale):
    """Three new latents point along the three lost directions, fire on the tokens that use them (and rarely
    elsewhere), and the reconstruction becomes near-exact again."""
    acts, codes, basis, sae = _structured(rescale)
    report = resample_dead_latents(sae, acts, seed=0)
    assert report.dead_before == 3 and report.dead_after == 0
    cos = torch.nn.functional.normalize(sae.W_dec[:3], dim=-1) @ basis[:3].T
    assert sorted(cos.argmax(-1).tolist()) == [0, 1, 2]  # one new latent per lost direction
    assert (cos.max(-1).values > 0.95).all(), cos
    assert report.explained_variance_before < 0.85 < 0.95 < report.explained_variance_after
    fires = sae.encode(acts) > 0
    for j in range(3):
        lost = int(cos[j].argmax())
        uses = codes[:, lost] > 0
        assert fires[uses, j].float().mean() > 0.8 and fires[~uses, j].float().mean() < 0.05


def test_resampling_is_deterministic_and_a_no_op_without_dead_latents():
    acts = _acts()
    a, b = (make_sae("topk", 32, 64, TINY_HOOK, k=4) for _ in range(2))
    for sae in (a, b):
        _kill(sae, [1, 7, 9])
        resample_dead_latents(sae, acts, seed=11)
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor)
    state = {n: t.clone() for n, t in a.state_dict().items()}
    report = resample_dead_latents(a, acts, seed=0)
    if report.dead_before == 0:
        assert report.resampled == 0
        for name, tensor in a.state_dict().items():
            torch.testing.assert_close(state[name], tensor)


def test_resampling_refuses_bad_input():
    acts = _acts()
    with pytest.raises(InterpSteerError, match="TopK"):
        resample_dead_latents(make_sae("standard", 32, 64, TINY_HOOK), acts)
    sae = make_sae("topk", 32, 64, TINY_HOOK, k=4)
    with pytest.raises(InterpSteerError, match=r"acts must be \(tokens, 32\)"):
        resample_dead_latents(sae, acts[:, :16])
    bad = acts.clone()
    bad[3, 3] = float("nan")
    with pytest.raises(InterpSteerError, match="NaN"):
        resample_dead_latents(sae, bad)
    with pytest.raises(InterpSteerError, match="iters must be a whole number"):
        resample_dead_latents(sae, acts, iters=-1)


def _tiny_kwargs(**extra):
    return dict(hook=TINY_HOOK, d_sae=64, k=8, context_size=32, train_batch_size_tokens=256,
                store_batch_size_prompts=4, n_batches_in_buffer=4, norm_estimate_batches=2, progress=False, **extra)


def test_fine_tuning_from_a_trained_sae_with_resampling(tmp_path, tiny_model):
    """``init_from`` + ``resample_dead``: training starts from the given SAE (its function is kept through the
    unfold/refold of the activation scaling), the dead latents get new directions and some fire afterwards."""
    base = train_sae(tiny_model, TEXTS, training_tokens=4096, output_dir=tmp_path / "base", **_tiny_kwargs())
    _kill(base, list(range(0, 64, 2)))  # half the latents dead
    base.save_model(tmp_path / "half_dead")
    rows = tokenize_corpus(TEXTS, tiny_model.tokenizer, 32, progress=False)
    acts = sample_activations(tiny_model, rows, TINY_HOOK, progress=False)
    dead_before = int((_fires(base, acts) == 0).sum())
    assert dead_before >= 32
    q_base = sae_quality(tiny_model, base, TEXTS[:10], context_size=32, max_tokens=320, progress=False)

    # lr ≈ 0: the output is the input SAE, so the scaling unfold/refold preserves it
    same = train_sae(tiny_model, TEXTS, training_tokens=512, lr=1e-12, init_from=str(tmp_path / "half_dead"),
                     output_dir=tmp_path / "same", **_tiny_kwargs())
    q_same = sae_quality(tiny_model, same, TEXTS[:10], context_size=32, max_tokens=320, progress=False)
    assert q_same.explained_variance == pytest.approx(q_base.explained_variance, abs=0.02)
    assert int((_fires(same, acts) == 0).sum()) == dead_before

    tuned = train_sae(tiny_model, TEXTS, training_tokens=2048, init_from=str(tmp_path / "half_dead"),
                      resample_dead=True, resample_tokens=2048, aux_loss_coefficient=0.5,
                      output_dir=tmp_path / "tuned", **_tiny_kwargs())
    meta = json.loads((tmp_path / "tuned" / "interp_steer.json").read_text())
    extra = meta["training_config"]["extra"]
    assert extra["resample"]["dead_before"] >= 32 and extra["resample"]["resampled"] == extra["resample"]["dead_before"]
    assert extra["init_from"]["path"] == str(tmp_path / "half_dead") and extra["init_scaling_factor"] > 0
    assert meta["training_config"]["aux_loss_coefficient"] == 0.5
    # a new latent fires where its predicted residual clears the k-th pre-activation: on this barely trained
    # tiny SAE only some do (the structured tests above show the directions it finds)
    assert int((_fires(tuned, acts) == 0).sum()) < dead_before
    assert load_sae(path=tmp_path / "tuned", model=tiny_model).cfg.d_sae == 64


def test_init_from_refuses_mismatches_before_training(tmp_path, tiny_model):
    make_sae("topk", tiny_model.cfg.d_model, 48, TINY_HOOK, k=8).save_model(tmp_path / "w48")
    with pytest.raises(InterpSteerError, match=r"does not match this run: d_sae 48 \(the run asks for 64\)"):
        train_sae(tiny_model, TEXTS, training_tokens=512, init_from=str(tmp_path / "w48"),
                  output_dir=tmp_path / "x", **_tiny_kwargs())
    with pytest.raises(InterpSteerError, match="resample_dead needs init_from"):
        train_sae(tiny_model, TEXTS, training_tokens=512, resample_dead=True, output_dir=tmp_path / "y",
                  **_tiny_kwargs())
    with pytest.raises(InterpSteerError, match="exclude each other"):
        train_sae(tiny_model, TEXTS, training_tokens=512, init_from=str(tmp_path / "w48"),
                  resume_from_checkpoint=str(tmp_path), output_dir=tmp_path / "z", **_tiny_kwargs())
    with pytest.raises(InterpSteerError, match="aux_loss_coefficient must be >= 0"):
        train_sae(tiny_model, TEXTS, training_tokens=512, aux_loss_coefficient=-1.0, output_dir=tmp_path / "w",
                  **_tiny_kwargs())
    with pytest.raises(InterpSteerError, match="resample_tokens must be >= 1"):
        train_sae(tiny_model, TEXTS, training_tokens=512, resample_tokens=0, output_dir=tmp_path / "v",
                  **_tiny_kwargs())
    assert not any((tmp_path / name).exists() for name in "xyzwv")


def test_init_sae_is_moved_into_the_normalised_training_space(tmp_path, tiny_model):
    """sae-lens trains on x·s (s = sqrt(d_in) / mean ‖x‖) and folds s back at the end; an exported SAE reads raw
    x, so its weights are unfolded first: the same function of x·s, with b_dec·s, W_dec·s, W_enc/s."""
    from interp_steer.saes.training import SAETrainingConfig, _load_init_sae, _prepare_init_sae

    make_sae("topk", tiny_model.cfg.d_model, 64, TINY_HOOK, k=8).save_model(tmp_path / "sae")
    cfg = SAETrainingConfig(hook=TINY_HOOK, d_sae=64, k=8, context_size=32, init_from=str(tmp_path / "sae"),
                            resample_tokens=640)
    sae = _load_init_sae(cfg, tiny_model.cfg.d_model, "cpu")
    original = {n: t.detach().clone() for n, t in sae.state_dict().items()}
    rows = tokenize_corpus(TEXTS, tiny_model.tokenizer, 32, progress=False)
    _prepare_init_sae(tiny_model, sae, cfg, rows, progress=False)
    acts = sample_activations(tiny_model, rows[:20], TINY_HOOK, progress=False)
    s = 32**0.5 / float(acts.norm(dim=-1).mean())
    assert cfg.extra["init_scaling_factor"] == pytest.approx(s, rel=1e-5) and abs(s - 1) > 0.5
    assert sae.cfg.normalize_activations == "expected_average_only_in"
    torch.testing.assert_close(sae.b_dec, original["b_dec"] * s)
    torch.testing.assert_close(sae.W_dec, original["W_dec"] * s)
    torch.testing.assert_close(sae.W_enc, original["W_enc"] / s)
    torch.testing.assert_close(sae.b_enc, original["b_enc"])
