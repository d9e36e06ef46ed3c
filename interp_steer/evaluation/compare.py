"""λ sweeps of one vector and side-by-side comparison of steering methods on the same split, layer and data.

* :func:`strength_sweep` – culture MCQ report (accuracy, localized / non-localized, RCA, PNLG, per country) of one
  vector at each strength; strength 0 is the unsteered model.
* :func:`behaviour_sweep` – behaviour scores at each strength: the free-text matching-answer probability and
  the A/B probability of the matching letter.
* :func:`compare_methods` – for each country: build a vector with every method (CAA, SAS, BiPO, YaPO, LinEAS)
  from that country's *training* split, choose each method's strength on the training questions (best RCA,
  then accuracy), and report the test questions at every strength and at the chosen one, next to the
  unsteered model. Knowledge preservation (perplexity on held-out general text and accuracy on a local
  knowledge set, steered vs unsteered) is measured at each method's chosen strength. The strength is chosen by
  :func:`interp_steer.evaluation.calibration.calibrate_strength` with ``CompareConfig.max_ppl_ratio`` (the
  fluency guard, default 1.2): only strengths that keep held-out perplexity within that factor of the unsteered
  model's are eligible; a method with none is reported at its smallest λ and marked as breaking the bound. The
  guard uses its own held-out documents, not the preservation texts, so the reported Δppl stays an independent
  check. The table has a prompting row per country: the unsteered model asked the localized question (which
  names the country), the reference steering is meant to approach.
* :func:`write_report_html` – an offline plotly page: accuracy vs λ per method, and localized vs
  non-localized accuracy per country at the chosen strengths.

Strengths mean what each method's intervention means: ``h + λ·v`` (CAA, BiPO, SAS decoded), the SAE-latent
shift ``ReLU(s + λ·v)`` (YaPO) and the interpolation ``λ·T(h) + (1 − λ)·h`` (LinEAS).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interp_steer.data.schemas import MCQItem, PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.shared_layers import SharedLayers, first_changed_block, resolve
from interp_steer.io import write_text_atomic
from interp_steer.steering.vector import SteeringVector

METHODS = ("caa", "sas", "bipo", "yapo", "lineas")
GUARD_TOKENS = 256  # tokens per fluency-guard document (the perplexity default)


def strength_sweep(model: Any, vector: SteeringVector | None, items: Sequence[MCQItem],
                   strengths: Sequence[float], *, sae: Any | None = None, method: str = "loglik",
                   batch_size: int = 16, shared: SharedLayers | bool = True) -> list[dict[str, Any]]:
    """Culture report of ``items`` at each strength (``{"strength", "overall", "per_country", "score_shift"}``).

    ``shared`` (default ``True``): run the blocks below the vector's layer once for all strengths
    (:mod:`interp_steer.evaluation.shared_layers`; same scores); pass a ``SharedLayers`` to share them with
    other sweeps of the same items, ``False`` to run every strength in full.

    ``score_shift`` is the mean absolute change of the option scores against the unsteered model (nats per
    token for ``loglik``): it shows that a vector acts even where the argmax, hence accuracy, does not move.
    ``answer_margin`` is the mean of (score of the target culture's option − mean score of the other options),
    and ``margin_shift`` its change against the unsteered model: the *direction* of that action (positive:
    towards the target culture's answers), continuous where accuracy moves in steps.
    """
    from interp_steer.evaluation.mcq import culture_report, score_mcq

    if not strengths:
        raise InterpSteerError("no strengths to evaluate")
    lower = resolve(model, vector, shared)
    if lower is None:
        plain = score_mcq(model, items, None, 0.0, method=method, batch_size=batch_size)
    else:  # the unsteered scores are the same for every vector sharing these layers: computed once
        key = ("mcq", method, batch_size, tuple((it.question, tuple(it.options), it.answer, it.country,
                                                 it.localization_status) for it in items))
        if key not in lower.unsteered:
            lower.unsteered[key] = score_mcq(model, items, None, 0.0, method=method, batch_size=batch_size,
                                             shared=lower)
        plain = lower.unsteered[key]
    flat_plain = [x for s in plain for x in s.scores]
    margin_plain = _answer_margin(plain)
    rows = []
    for lam in strengths:
        if vector is None or lam == 0:
            scores = plain
        else:
            scores = score_mcq(model, items, vector, float(lam), sae=sae, method=method, batch_size=batch_size,
                               shared=lower)
        flat = [x for s in scores for x in s.scores]
        shift = sum(abs(a - b) for a, b in zip(flat, flat_plain, strict=True)) / len(flat)
        margin = _answer_margin(scores)
        rows.append({"strength": float(lam), **culture_report(scores), "score_shift": shift,
                     "answer_margin": margin, "margin_shift": margin - margin_plain})
    return rows


def _answer_margin(scores: Sequence[Any]) -> float:
    """Mean over items of the answer option's score minus the mean score of the other options."""
    margins = [s.scores[s.answer] - (sum(s.scores) - s.scores[s.answer]) / (len(s.scores) - 1)
               for s in scores if len(s.scores) > 1]
    return sum(margins) / len(margins) if margins else 0.0


def behaviour_sweep(model: Any, vector: SteeringVector | None, items: Sequence[MCQItem],
                    strengths: Sequence[float], *, sae: Any | None = None,
                    shared: SharedLayers | bool = True,
                    pairs: Sequence[PreferenceExample] | None = None) -> list[dict[str, Any]]:
    """Behaviour scores at each strength (``shared``: as in :func:`strength_sweep`).

    ``items``: A/B questions, scored as the probability of the matching letter (``p_matching``, ``accuracy``;
    none when empty). ``pairs``: free-text (question, matching answer, other answer) pairs, scored as
    ``p_text`` = mean σ(log p(matching answer) − log p(other answer)) after the bare question, with the mean
    log-prob margin ``margin_text`` — the measure that moves on small models, whose A/B letters stay at chance.
    """
    from interp_steer.evaluation.behaviour import ab_probability, pair_probability

    if not items and not pairs:
        raise InterpSteerError("behaviour_sweep needs A/B items or free-text pairs to score")
    lower = resolve(model, vector, shared)
    rows: list[dict[str, Any]] = []
    for lam in strengths:
        row: dict[str, Any] = {"strength": float(lam)}
        if pairs:
            text = pair_probability(model, pairs, vector, float(lam), sae=sae, shared=lower)
            row.update(p_text=text["p_matching"], margin_text=text["mean_margin"], n_text=text["n"])
        if items:
            row.update(ab_probability(model, items, vector, float(lam), sae=sae, shared=lower))
        rows.append(row)
    return rows


def _key(row: dict[str, Any]) -> tuple[float, float, float]:
    o = row["overall"]
    return (o.get("rca") or 0.0, o.get("accuracy") or 0.0, -abs(row["strength"]))


def choose_strength(rows: Sequence[dict[str, Any]]) -> float:
    """The strength with the best RCA, then accuracy, then the smallest magnitude.

    Rows marked ``"fluent": False`` (by the fluency guard, see :class:`CompareConfig`) are passed over; when
    every row is marked so, the smallest magnitude is returned.
    """
    allowed = [r for r in rows if r.get("fluent", True)]
    if not allowed:
        return min((r["strength"] for r in rows), key=abs)
    return max(allowed, key=_key)["strength"]


@dataclass
class CompareConfig:
    """Settings of :func:`compare_methods` (stored in its output)."""

    countries: list[str] = field(default_factory=lambda: ["morocco"])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    strengths: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    layer: int | None = None  # default: the SAE's layer (every method intervenes there; LinEAS: see lineas_hooks)
    # BiPO / YaPO: the training preset (methods.preference.PRESETS), its epochs, and an optional cap on the
    # optimiser steps; the kept vector is the one with the lowest loss on 15 % of the training pairs held out
    preset: str = "small"
    epochs: int = 2
    steps: int | None = None
    batch_size: int = 4
    lr: dict[str, float] = field(default_factory=lambda: {"lineas": 2e-2})  # BiPO / YaPO: the preset's unless set
    lineas_steps: int = 40
    lineas_hooks: str | None = None  # default: the residual stream after the chosen layer and 4 layers around
    sas_top_k: int = 32
    yapo_sparse: bool = True  # YaPO with methods.preference.SPARSE_DEFAULT (its top 256 latents); False: exact
    scoring: str = "loglik"
    preservation: bool = True
    preservation_texts: int = 32
    preservation_items: int | None = None  # knowledge-set questions (None: all 63)
    # fluency guard: a strength is eligible only if held-out perplexity steered ≤ max_ppl_ratio × unsteered,
    # measured on guard_texts held-out corpus documents disjoint from the preservation texts (None: no guard)
    max_ppl_ratio: float | None = 1.2
    guard_texts: int = 8
    max_train_pairs: int | None = None  # caps for quick runs (None: the whole split)
    max_items: int | None = None
    seed: int = 0


def _lineas_texts(model: Any, items: Sequence[MCQItem]) -> tuple[list[str], list[str]]:
    """Source = the non-localized questions, target = the localized ones, rendered as chat prompts."""
    from interp_steer.chat import render_prompt

    src = [render_prompt(model.tokenizer, it.question) for it in items if it.localization_status == "nolocalized"]
    tgt = [render_prompt(model.tokenizer, it.question) for it in items if it.localization_status == "localized"]
    if not src or not tgt:
        raise InterpSteerError("LinEAS needs both localized and non-localized training questions")
    return src, tgt


def _layer(cfg: CompareConfig, sae: Any) -> int:
    """The layer every method intervenes at: ``cfg.layer``, else the SAE's."""
    return cfg.layer if cfg.layer is not None else int(sae.cfg.metadata.hook_name.split(".")[1])


def build_vector(model: Any, sae: Any, method: str, country: str, cfg: CompareConfig, *,
                 progress: bool = False) -> SteeringVector:
    """A ``method`` vector for ``country`` from the culture set's training split."""
    from interp_steer.data.loaders import culture_preferences

    layer = _layer(cfg, sae)
    pairs = culture_preferences(countries=country, split="train", form="mcq", seed=cfg.seed)[: cfg.max_train_pairs]
    if method == "caa":
        from interp_steer.methods.caa import compute_caa

        return compute_caa(model, pairs, layers=layer)[layer]
    if method == "sas":
        from interp_steer.methods.sas import compute_sas

        return compute_sas(model, sae, pairs, top_k=cfg.sas_top_k)
    if method in ("bipo", "yapo"):
        from interp_steer.methods.preference import SPARSE_DEFAULT, train_vector

        extra: dict[str, Any] = dict(SPARSE_DEFAULT) if (method == "yapo" and cfg.yapo_sparse) else {}
        if method in cfg.lr:
            extra["lr"] = cfg.lr[method]
        if cfg.steps is not None:
            extra["max_steps"] = cfg.steps
        # the kept vector is chosen on 15 % of the training pairs held out (never on the test questions)
        res = train_vector(model, pairs, method, sae=sae if method == "yapo" else None, eval_fraction=0.15,
                           layer=layer, preset=cfg.preset, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           seed=cfg.seed, progress=progress, **extra)
        return res.vector
    if method == "lineas":
        from interp_steer.methods.lineas import train_lineas

        src, tgt = _lineas_texts(model, _items(country, "train", cfg))
        hooks = cfg.lineas_hooks or [f"blocks.{L}.hook_resid_post"
                                     for L in range(max(0, layer - 4), min(model.cfg.n_layers, layer + 1))]
        return train_lineas(model, src, tgt, hooks=hooks, steps=cfg.lineas_steps, lr=cfg.lr.get("lineas", 2e-2),
                            batch_size=min(32, len(src)), seed=cfg.seed, progress=progress).vector
    raise InterpSteerError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def compare_methods(model: Any, sae: Any, config: CompareConfig | None = None, *,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every method on the same countries, split, layer and data (see the module docstring)."""
    cfg = config or CompareConfig()
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise InterpSteerError(f"unknown method(s) {', '.join(bad)}; expected {', '.join(METHODS)}")
    say = log or (lambda _msg: None)
    strengths = sorted({float(s) for s in cfg.strengths if s != 0})
    if not strengths:
        raise InterpSteerError("give at least one non-zero strength")
    result: dict[str, Any] = {"config": asdict(cfg), "countries": {}}
    if cfg.max_ppl_ratio is not None and cfg.max_ppl_ratio <= 1:
        raise InterpSteerError(f"max_ppl_ratio must be above 1 (a perplexity ratio), got {cfg.max_ppl_ratio}")
    preservation_inputs = _preservation_inputs(model, cfg) if cfg.preservation else None
    guard = None
    if cfg.max_ppl_ratio is not None:
        guard = _guard_inputs(model, cfg, cfg.max_ppl_ratio, preservation_inputs.texts if preservation_inputs else [])
        result["fluency_guard"] = {"n_texts": len(guard["texts"]), **{k: v for k, v in guard.items() if k != "texts"}}
    split = first_changed_block(model, [f"blocks.{_layer(cfg, sae)}.hook_resid_post"])
    for country in cfg.countries:
        train_items, test_items = _items(country, "train", cfg), _items(country, "test", cfg)
        # the blocks below the methods' layer run once per country for every method and strength (LinEAS,
        # which also steers below it, runs in full)
        shared = SharedLayers(model, split)
        baseline = strength_sweep(model, None, test_items, [0.0], method=cfg.scoring, shared=shared)[0]
        entry: dict[str, Any] = {"n_train_items": len(train_items), "n_test_items": len(test_items),
                                 "baseline": baseline, "methods": {}}
        for method in cfg.methods:
            t0 = time.perf_counter()
            say(f"{country}: {method} ...")
            vector = build_vector(model, sae, method, country, cfg)
            vsae = sae if vector.kind == "sae" else None
            built = time.perf_counter() - t0
            train_sweep = strength_sweep(model, vector, train_items, strengths, sae=vsae, method=cfg.scoring,
                                         shared=shared)
            within: bool | None = None
            if guard is not None and cfg.max_ppl_ratio is not None:
                picked = _calibrated_choice(model, vector, vsae, train_sweep, guard, cfg.max_ppl_ratio)
                within = picked is not None
                chosen = picked if picked is not None else choose_strength(train_sweep)
                if not within:
                    say(f"{country}: {method}: no strength keeps perplexity within ×{cfg.max_ppl_ratio:g}; "
                        f"λ={chosen:g} is reported and marked as breaking the bound")
            else:
                chosen = choose_strength(train_sweep)
            test = strength_sweep(model, vector, test_items, strengths, sae=vsae, method=cfg.scoring, shared=shared)
            row: dict[str, Any] = {"strength": chosen, "sweep": test,
                                   "train_sweep": [{k: r[k] for k in ("strength", "overall", "fluent",
                                                                      "guard_perplexity", "answer_margin",
                                                                      "margin_shift") if k in r}
                                                   for r in train_sweep],
                                   "at_strength": next(r for r in test if r["strength"] == chosen),
                                   "within_bound": within,
                                   "seconds_build": round(built, 1), "seconds_total": 0.0,
                                   "vector_kind": vector.kind, "hooks": vector.hook_points}
            if preservation_inputs is not None:
                row["preservation"] = _preservation(model, vector, chosen, vsae, preservation_inputs)
            row["seconds_total"] = round(time.perf_counter() - t0, 1)
            entry["methods"][method] = row
            o = row["at_strength"]["overall"]
            say(f"{country}: {method} λ={chosen:g}: accuracy {o['accuracy']:.3f} (loc {o['acc_localized']:.3f}, "
                f"non-loc {o['acc_nonlocalized']:.3f}), RCA {o['rca']:.3f}")
        result["countries"][country] = entry
    result["table"] = summary_table(result)
    return result


def _items(country: str, split: str, cfg: CompareConfig) -> list[MCQItem]:
    """The country's questions of ``split``, at most ``cfg.max_items`` of them, both regimes kept balanced."""
    from interp_steer.data.loaders import load_culture

    items = load_culture(countries=country, split=split, seed=cfg.seed)
    if cfg.max_items is None:
        return items
    loc = [it for it in items if it.localization_status == "localized"]
    non = [it for it in items if it.localization_status != "localized"]
    half = max(1, cfg.max_items // 2)
    return loc[:half] + non[:half]


def _preservation_inputs(model: Any, cfg: CompareConfig) -> Any:
    """The unsteered perplexity and knowledge scores, computed once for every method."""
    from interp_steer.evaluation.preservation import default_texts, load_knowledge, preservation_baseline

    return preservation_baseline(model, texts=default_texts(cfg.preservation_texts, seed=cfg.seed),
                                 mcq=load_knowledge(max_items=cfg.preservation_items), max_texts=None)


def _guard_inputs(model: Any, cfg: CompareConfig, ratio: float, taken: Sequence[str]) -> dict[str, Any]:
    """Held-out documents for the fluency guard (none of them among ``taken``, the preservation texts), their
    unsteered perplexity and the largest perplexity a strength may reach (``ratio`` times that)."""
    from interp_steer.evaluation.calibration import calibration_texts
    from interp_steer.evaluation.preservation import text_perplexity

    texts = calibration_texts(None, cfg.guard_texts, exclude=taken, seed=cfg.seed + 1)
    ppl = text_perplexity(model, texts, max_tokens=GUARD_TOKENS).perplexity
    return {"texts": texts, "perplexity_unsteered": ppl, "max_perplexity": ratio * ppl}


def _calibrated_choice(model: Any, vector: SteeringVector, sae: Any | None, rows: list[dict[str, Any]],
                       guard: dict[str, Any], ratio: float) -> float | None:
    """The strength :func:`calibrate_strength` picks with the training rows' (RCA, accuracy) as its metric;
    marks each row ``fluent`` / ``guard_perplexity`` (``None`` above the first strength that breaks the bound).
    ``None`` when no strength is fluent."""
    from interp_steer.evaluation.calibration import calibrate_strength

    by_strength = {r["strength"]: r for r in rows}

    def effect(lam: float) -> float:  # RCA first, accuracy to break ties (both in [0, 1])
        o = by_strength[lam]["overall"]
        return (o.get("rca") or 0.0) + 1e-3 * (o.get("accuracy") or 0.0)

    cal = calibrate_strength(model, vector, effect, sae=sae, strengths=[r["strength"] for r in rows],
                             texts=guard["texts"], max_ratio=ratio, bidirectional=False, max_tokens=GUARD_TOKENS,
                             perplexity_unsteered=guard["perplexity_unsteered"], refine=0)
    for c in cal.rows:
        r = by_strength[c["strength"]]
        r["guard_perplexity"] = None if c["ppl_ratio"] is None else c["ppl_ratio"] * cal.perplexity_unsteered
        r["fluent"] = bool(c["fluent"])
    return cal.strength


def _preservation(model: Any, vector: SteeringVector, strength: float, sae: Any | None,
                  baseline: Any) -> dict[str, Any]:
    from interp_steer.evaluation.preservation import knowledge_preservation

    return knowledge_preservation(model, vector, strength, sae=sae, baseline=baseline).to_dict()


def summary_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (country, method) at the chosen strength, with the unsteered row first."""
    rows = []
    for country, entry in result["countries"].items():
        o = entry["baseline"]["overall"]
        rows.append({"country": country, "method": "none", "strength": 0.0, "accuracy": o["accuracy"],
                     "acc_localized": o["acc_localized"], "acc_nonlocalized": o["acc_nonlocalized"],
                     "rca": o.get("rca"), "pnlg": o.get("pnlg")})
        # the prompting reference: ask the localized question (it names the country) instead of steering
        loc = o["acc_localized"]
        rows.append({"country": country, "method": "prompt", "strength": None, "accuracy": loc,
                     "acc_localized": loc, "acc_nonlocalized": loc, "rca": None, "pnlg": None})
        for method, row in entry["methods"].items():
            o = row["at_strength"]["overall"]
            out = {"country": country, "method": method, "strength": row["strength"], "accuracy": o["accuracy"],
                   "acc_localized": o["acc_localized"], "acc_nonlocalized": o["acc_nonlocalized"],
                   "rca": o.get("rca"), "pnlg": o.get("pnlg"), "within_bound": row.get("within_bound")}
            pres = row.get("preservation")
            if pres:
                out["ppl_shift"] = pres.get("perplexity_shift")
                out["knowledge_acc_shift"] = pres.get("accuracy_shift")
            rows.append(out)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`summary_table` rows."""
    def f(x: Any, pct: bool = True) -> str:
        if x is None:
            return "–"
        return f"{100 * x:.1f}" if pct else f"{x:+.3g}" if isinstance(x, float) else str(x)

    head = "| country | method | λ | acc % | loc % | non-loc % | RCA % | PNLG | Δppl | Δknowledge acc % |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if r["strength"] is None:
            lam = "–"
        else:
            lam = f"{r['strength']:g}" + (" (breaks the fluency bound)" if r.get("within_bound") is False else "")
        lines.append(f"| {r['country']} | {r['method']} | {lam} | {f(r['accuracy'])} | "
                     f"{f(r['acc_localized'])} | {f(r['acc_nonlocalized'])} | {f(r['rca'])} | "
                     f"{f(r['pnlg'], False)} | {f(r.get('ppl_shift'), False)} | {f(r.get('knowledge_acc_shift'))} |")
    return "\n".join(lines)


def write_report_html(result: dict[str, Any], path: str | Path, *, title: str = "interp-steer comparison") -> Path:
    """Offline plotly page (plotly.js inlined): accuracy vs λ per method (one panel per country), and
    localized vs non-localized accuracy per country at each method's chosen strength."""
    import plotly.graph_objects as go

    figs = []
    for country, entry in result["countries"].items():
        fig = go.Figure()
        base = entry["baseline"]["overall"]["accuracy"]
        for method, row in entry["methods"].items():
            xs = [0.0] + [r["strength"] for r in row["sweep"]]
            ys = [base] + [r["overall"]["accuracy"] for r in row["sweep"]]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=method))
        fig.update_layout(title=f"{country}: test accuracy vs λ", xaxis_title="λ", yaxis_title="accuracy",
                          yaxis_range=[0, 1])
        figs.append(fig)
    bars = go.Figure()
    rows = summary_table(result)
    labels = [f"{r['country']}·{r['method']}" for r in rows]
    bars.add_trace(go.Bar(x=labels, y=[r["acc_localized"] for r in rows], name="localized"))
    bars.add_trace(go.Bar(x=labels, y=[r["acc_nonlocalized"] for r in rows], name="non-localized"))
    bars.update_layout(barmode="group", title="localized vs non-localized accuracy at the chosen λ",
                       yaxis_range=[0, 1])
    figs.append(bars)
    return write_figures_html(figs, path, title=title)


def write_sweep_html(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str) -> Path:
    """Offline plotly page for one vector's sweep: accuracy (and localized / non-localized) or the behaviour
    probabilities vs λ, and per-country localized vs non-localized bars at each λ."""
    import plotly.graph_objects as go

    line = go.Figure()
    xs = [r["strength"] for r in rows]
    for key, name in (("accuracy", "all"), ("acc_localized", "localized"), ("acc_nonlocalized", "non-localized"),
                      ("p_text", "p(matching answer), free text"), ("p_matching", "A/B p(matching letter)")):
        ys = [r.get("overall", r).get(key) for r in rows]
        if any(y is not None for y in ys):
            line.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name))
    line.update_layout(title=title, xaxis_title="λ", yaxis_range=[0, 1])
    figs = [line]
    if rows and rows[0].get("per_country"):
        bars = go.Figure()
        for r in rows:
            pc = r["per_country"]
            bars.add_trace(go.Bar(x=[f"{c} loc" for c in pc] + [f"{c} non-loc" for c in pc],
                                  y=[pc[c]["acc_localized"] for c in pc] + [pc[c]["acc_nonlocalized"] for c in pc],
                                  name=f"λ={r['strength']:g}"))
        bars.update_layout(barmode="group", title="per country, localized vs non-localized", yaxis_range=[0, 1])
        figs.append(bars)
    return write_figures_html(figs, path, title=title)


def write_figures_html(figs: Sequence[Any], path: str | Path, *, title: str) -> Path:
    """One self-contained HTML page (plotly.js inlined once, no network) holding ``figs``; written atomically."""
    import html as _html

    import plotly.io as pio

    parts = [pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False) for i, fig in enumerate(figs)]
    safe = _html.escape(title)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{safe}</title></head><body>"
            f"<h1>{safe}</h1>" + "".join(parts) + "</body></html>")
    return write_text_atomic(path, page)
