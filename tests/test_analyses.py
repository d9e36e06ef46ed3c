"""The analyses' pure helpers (the scripts themselves run the real model; see README "Notebooks and analyses")."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, folder: str = "analyses"):
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", ROOT / folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steps_to_threshold_uses_the_moving_average():
    conv = _load("convergence")
    losses = [0.7, 0.05, 0.7, 0.05, 0.05, 0.05]
    assert conv.steps_to_threshold(losses, 0.1, 1) == 2  # raw loss dips at step 2
    assert conv.steps_to_threshold(losses, 0.1, 3) == 6  # the 3-step mean first drops below 0.1 at step 6
    assert conv.steps_to_threshold(losses, 0.01, 3) is None
    assert conv.moving_average([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]


def test_steps_to_by_direction_averages_each_direction_over_its_own_steps():
    conv = _load("convergence")
    # d = -1 steps fall fast, d = +1 steps stay high: the mixed 2-step mean never gets below 0.3
    losses = {1: 0.7, 2: 0.5, 3: 0.2, 4: 0.65, 5: 0.05, 6: 0.6, 7: 0.04}
    dirs = {1: 1.0, 2: -1.0, 3: -1.0, 4: 1.0, 5: -1.0, 6: 1.0, 7: -1.0}
    assert conv.steps_to_threshold([losses[k] for k in sorted(losses)], 0.3, 2) is None
    by = conv.steps_to_by_direction(losses, dirs, [0.65, 0.3, 0.1], 2)
    assert by["-1"] == {"0.65": 3, "0.3": 5, "0.1": 7}  # -1 steps 2, 3, 5, 7: means 0.35, 0.125, 0.045
    assert by["+1"] == {"0.65": 6, "0.3": None, "0.1": None}  # +1 steps 1, 4, 6: means 0.675, 0.625
    assert conv.steps_to_by_direction(losses, {}, [0.3], 2) == {}


def test_level_ratios_take_the_fastest_run_per_method():
    conv = _load("convergence")
    runs = [{"method": "bipo", "steps_to": {"0.5": 40, "0.1": None}},
            {"method": "bipo", "steps_to": {"0.5": 30, "0.1": None}},
            {"method": "yapo", "steps_to": {"0.5": 10, "0.1": 90}}]
    assert conv._level_ratios(runs) == {"0.5": pytest.approx(3.0), "0.1": None}


def test_convergence_paper_preset_keeps_the_official_schedule(tmp_path):
    """--preset paper trains with the preset's own lr, 4 × 8 accumulation and epochs (nothing overridden that
    the user did not pass); without a preset the script keeps batch 4 and 150 steps; checkpoints go to one
    folder per run so a rerun resumes each."""
    import argparse

    from interp_steer.methods.preference import PRESETS, preference_config

    conv = _load("convergence")

    def ns(**kw):
        base = dict(preset=None, batch_size=None, max_steps=None, layer=15, seed=0, checkpoint_every=0,
                    reference_cache=None)
        return conv.resolve_defaults(argparse.Namespace(**{**base, **kw}))

    paper = conv.training_settings(ns(preset="paper"), "yapo", None, 1000, tmp_path)
    assert paper == {"layer": 15, "seed": 0, "progress": False, "preset": "paper", "batch_size": 4}
    cfg = preference_config("paper", **{k: v for k, v in paper.items() if k not in ("preset", "progress")})
    assert (cfg.lr, cfg.batch_size * cfg.grad_accum, cfg.warmup_steps, cfg.epochs) == (5e-4, 32, 100, 20)
    assert PRESETS["paper"]["grad_accum"] == 8
    capped = conv.training_settings(ns(preset="paper", max_steps=50, checkpoint_every=10), "bipo", 5e-4, 1000,
                                    tmp_path)
    assert capped["max_steps"] == 50 and capped["epochs"] == 2  # 50 steps × 32 pairs over 1000 pairs
    assert capped["checkpoint_every"] == 10 and capped["output_dir"] == tmp_path / "runs" / "bipo_lr0.0005"
    cached = conv.training_settings(ns(preset="paper", reference_cache="/tmp/ref"), "bipo", None, 1000, tmp_path)
    assert cached["reference_cache"] == "/tmp/ref"
    cfg = preference_config("paper", **{k: v for k, v in cached.items() if k not in ("preset", "progress")})
    assert cfg.reference_cache == "/tmp/ref"
    plain = conv.training_settings(ns(), "yapo", 5e-2, 68, tmp_path)
    assert plain == {"layer": 15, "seed": 0, "progress": False, "batch_size": 4, "lr": 5e-2, "max_steps": 150,
                     "epochs": 9}  # 150 steps × 4 pairs over 68 pairs


def test_convergence_status_summarises_unfinished_runs(tmp_path, capsys):
    """--status reads the step logs of runs split over folders (one per method), keeps the last record of a step
    a resumed run wrote twice, and reports steps-to-level from the moving average."""
    import json

    conv = _load("convergence")
    for method, losses in (("yapo", [0.7, 0.5, 0.2, 0.08, 0.05]), ("bipo", [0.7, 0.65, 0.6, 0.55, 0.5])):
        run = tmp_path / method / "runs" / f"{method}_lr0.0005"
        run.mkdir(parents=True)
        rows = [{"step": i + 1, "loss": x} for i, x in enumerate(losses)]
        rows.insert(2, {"step": 2, "loss": 9.0})  # superseded below by the resumed run's own step 2 (kept last)
        rows[1], rows[2] = rows[2], rows[1]
        rows.append({"eval": {"step": 5, "loss": 0.6, "pref_acc_plus": 0.7, "pref_acc_minus": 0.6}})
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    assert conv.main(["--status", "--output-dir", str(tmp_path), "--window", "2", "--also", "0.6"]) == 0
    out = json.loads((tmp_path / "progress.json").read_text())
    runs = {r["method"]: r for r in out["runs"]}
    assert runs["yapo"]["losses"] == [0.7, 0.5, 0.2, 0.08, 0.05] and runs["yapo"]["steps"] == 5
    assert runs["yapo"]["steps_to"] == {"0.6": 3, "0.1": 5} and runs["bipo"]["steps_to"] == {"0.6": 4, "0.1": None}
    assert runs["bipo"]["evals"][0]["pref_acc_plus"] == 0.7
    assert (tmp_path / "progress.html").is_file()
    assert "yapo  lr=0.0005: 5 steps" in capsys.readouterr().out


def test_effect_frontier_interpolates_in_the_ratio_and_flags_an_unreached_one():
    """scripts/effect_frontier.py reads a calibration curve at a fixed perplexity ratio: linear between the
    strengths around it (from ratio 1, effect 0 below the first), and a lower bound where the grid stops short."""
    fr = _load("effect_frontier", "scripts")
    rows = [{"strength": 2.0, "ppl_ratio": 1.10, "effect": 0.30},
            {"strength": 1.0, "ppl_ratio": 1.04, "effect": 0.12},
            {"strength": 4.0, "ppl_ratio": 1.25, "effect": None}]  # not fluent: no effect measured
    assert fr.effect_at(rows, 1.02) == (pytest.approx(0.06), True)  # half-way from (1, 0) to (1.04, 0.12)
    assert fr.effect_at(rows, 1.07) == (pytest.approx(0.21), True)  # half-way between the two measured points
    assert fr.effect_at(rows, 1.15) == (pytest.approx(0.30), False)  # beyond the last measured ratio: ≥ 0.30


def test_efficacy_benchmark_caa_layer_option_is_parsed_and_checked_before_the_model_loads():
    """benchmarks/bench_efficacy.py: ``caa:layer=N`` parses to the block CAA is built at; any other CAA option, or a
    layer that is not a block index, is one clear error before anything is loaded."""
    be = _load("bench_efficacy", "benchmarks")
    assert be.parse_method("caa:layer=18") == ("caa", {"layer": 18})
    assert be.parse_method("caa") == ("caa", {})
    for bad in ("caa:top_k=3", "caa:layer=x", "caa:layer=-1", "caa:layer=true"):
        with pytest.raises(SystemExit, match="CAA takes one option, layer=N"):
            be.main(["--sets", "bipo:power-seeking", "--methods", bad])


def _efficacy_run(folder: Path, set_spec: str, method: str, val: float, dp: float, seed: int = 0) -> None:
    runs = folder / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    record = {"set": set_spec, "method": method, "calibration": {"effect": val}, "strength": 2.0, "nnz": 256,
              "dp_plus": dp, "dp_minus": -dp, "ppl_ratio_plus": 1.1, "ppl_ratio_minus": 1.1,
              "settings": {"seed": seed, "train_pairs": 256, "val_pairs": 32, "test_pairs": 64, "layer": 15,
                           "max_ratio": 1.2}}
    (runs / f"{set_spec.split(':')[1]}__{method}.json").write_text(json.dumps(record))


def test_select_config_chooses_on_validation_and_refuses_candidates_on_other_pairs(tmp_path, capsys):
    """scripts/select_config.py picks the largest mean validation effect even where the test items favour another
    candidate (it never reads them to choose), and refuses a missing set or a candidate calibrated on other
    validation pairs with one error naming it."""
    sc = _load("select_config", "scripts")
    a, b = tmp_path / "a", tmp_path / "b"
    for s, (va, vb) in {"bipo:x": (0.30, 0.20), "mwe:y": (0.10, 0.15)}.items():
        _efficacy_run(a, s, "yapo", va, dp=0.10)   # better on validation (mean 0.20 vs 0.175)
        _efficacy_run(b, s, "yapo", vb, dp=0.30)   # better on test
    cands = {"a": sc.load_runs(str(a), "yapo"), "b": sc.load_runs(str(b), "yapo")}
    choice = sc.select(cands)
    assert choice["chosen"] == "a" and choice["sets"] == ["bipo:x", "mwe:y"]
    assert choice["best_per_set"] == {"bipo:x": "a", "mwe:y": "b"}
    assert choice["validation_mean"]["a"] == pytest.approx(0.20)
    assert sc.main(["--candidate", "a", str(a), "yapo", "--candidate", "b", str(b), "yapo",
                    "--output", str(tmp_path / "sel.json")]) == 0
    out = capsys.readouterr().out
    assert "| a (chosen) | 0.2000 | 0 of 2 |" in out and "| b | 0.1750 | 2 of 2 |" in out
    assert json.loads((tmp_path / "sel.json").read_text())["chosen"] == "a"
    with pytest.raises(SystemExit, match=r"'a' has no run for \['mwe:z'\]"):
        sc.select(cands, ["bipo:x", "mwe:z"])
    _efficacy_run(b, "bipo:x", "yapo", 0.5, dp=0.3, seed=1)
    cands["b"] = sc.load_runs(str(b), "yapo")
    with pytest.raises(SystemExit, match="'b' has seed=1, 'a' has seed=0; candidates must be calibrated"):
        sc.select(cands)


def test_caa_variants_ab_pairs_put_each_answer_behind_its_letter():
    from interp_steer.data.schemas import PreferenceExample

    cv = _load("caa_variants", "scripts")
    pairs = [PreferenceExample(f"Question {i}?", f"match {i}", f"other {i}") for i in range(40)]
    ab = cv.ab_pairs(pairs, seed=0)
    assert ab == cv.ab_pairs(pairs, seed=0) and ab != cv.ab_pairs(pairs, seed=1)  # seeded order
    letters = [p.chosen for p in ab]
    assert 10 <= letters.count("(A)") <= 30  # both orders occur
    for src, p in zip(pairs, ab, strict=True):
        assert p.prompt.startswith(src.prompt) and {p.chosen, p.rejected} == {"(A)", "(B)"}
        assert f"{p.chosen} {src.chosen}\n" in p.prompt + "\n" and f"{p.rejected} {src.rejected}\n" in p.prompt + "\n"


def test_caa_variants_pca_is_the_signed_top_component_at_the_mean_contrast_norm(tiny_model):
    import torch

    from interp_steer.data.schemas import PreferenceExample
    from interp_steer.methods.activations import collect_activations, preference_chats
    from interp_steer.methods.caa import compute_caa

    cv = _load("caa_variants", "scripts")
    pairs = [PreferenceExample(f"Q{i}: pick one.", f"yes {'a' * (i % 4 + 1)}", f"no {'b' * (i % 3 + 1)}")
             for i in range(8)]
    hook = "blocks.1.hook_resid_post"
    ref = compute_caa(tiny_model, pairs, layers=1)[1]
    vec = cv.pca_vector(tiny_model, pairs, ref, hook)
    v, mean = vec.tensors[hook]["vector"].float(), ref.tensors[hook]["vector"].float()
    assert torch.isclose(v.norm(), mean.norm(), rtol=1e-4)
    assert float(v @ mean) >= 0
    chosen, rejected = preference_chats(tiny_model, pairs)
    diffs = (collect_activations(tiny_model, chosen, [hook], "response_mean")[hook]
             - collect_activations(tiny_model, rejected, [hook], "response_mean")[hook])
    centred = diffs - diffs.mean(0)
    var = (centred @ (v / v.norm())).pow(2).sum()  # the variance its direction explains …
    top = torch.linalg.matrix_norm(centred, ord=2) ** 2  # … is the most any direction explains
    assert torch.isclose(var, top, rtol=1e-3)
    assert not torch.isclose((centred @ (mean / mean.norm())).pow(2).sum(), top, rtol=1e-3)  # the mean is not
    assert vec.config["aggregate"] == "pca" and ref.config.get("aggregate") is None


def test_convergence_sides_reads_the_loss_from_the_margin_shift_and_splits_it_per_token(tiny_model):
    """scripts/convergence_sides.py: the summed log-prob margin shift equals pair_probability's, the loss of
    each direction is −log σ(β·d·Δmargin), and its chosen and rejected parts add up to it."""
    import math

    from interp_steer.data.schemas import PreferenceExample
    from interp_steer.evaluation.behaviour import pair_probability
    from interp_steer.evaluation.openended import token_nll
    from interp_steer.methods.caa import compute_caa
    from interp_steer.methods.preference import prepare_pairs

    cs = _load("convergence_sides", "scripts")
    pairs = [PreferenceExample(f"Q{i}: help me?", "sure, here is a long answer " * (i + 2), "no")
             for i in range(4)]
    vec = compute_caa(tiny_model, pairs, layers=1)[1]
    data = prepare_pairs(tiny_model, pairs)
    base = token_nll(tiny_model, data.ids, data.response_start)
    m0 = pair_probability(tiny_model, pairs)["mean_margin"]
    for lam in (2.0, -2.0):
        row = cs.side(tiny_model, data, vec, None, lam, base, beta=0.1)
        m1 = pair_probability(tiny_model, pairs, vec, lam)["mean_margin"]
        assert row["margin_shift"] == pytest.approx(m1 - m0, abs=1e-4)
        assert abs(row["margin_shift"]) > 1e-3  # the vector does move the margin
        steered = token_nll(tiny_model, data.ids, data.response_start, vector=vec, strength=lam)
        d = 1 if lam > 0 else -1
        shifts = [(base[2 * i][0] - steered[2 * i][0]) - (base[2 * i + 1][0] - steered[2 * i + 1][0])
                  for i in range(len(pairs))]
        loss = sum(math.log1p(math.exp(-0.1 * d * s)) for s in shifts) / len(shifts)
        assert row["loss"] == pytest.approx(loss, rel=1e-6)
        per_chosen = sum((steered[2 * i][0] - base[2 * i][0]) / base[2 * i][1] for i in range(4)) / 4
        assert row["nll_per_token_chosen"] == pytest.approx(per_chosen, rel=1e-6)
        assert row["margin_shift_chosen"] + row["margin_shift_rejected"] == pytest.approx(row["margin_shift"])
        from_chosen = sum(base[2 * i][0] - steered[2 * i][0] for i in range(4)) / 4
        assert row["margin_shift_chosen"] == pytest.approx(from_chosen, rel=1e-6)
    assert cs.softplus(800.0) == pytest.approx(800.0) and cs.softplus(-800.0) == pytest.approx(0.0)
