"""Feature dashboards for steering vectors: one self-contained HTML page and a JSON export per vector.

:func:`build_features` ranks the SAE latents a vector uses (:func:`interp_steer.interpret.features.top_latents`),
inspects them over a corpus in one batched pass (:func:`interp_steer.interpret.latents.inspect_latents`:
top-activating snippets, firing density and histogram, logit lens, mean activation under steering at each λ)
and returns the JSON export below. :func:`render_html` turns that export (plus, optionally, a λ-sweep and an
activation-patching heatmap made elsewhere) into one HTML page with plotly.js inlined once: no CDN, no network,
it opens offline. :func:`write_dashboard` writes ``dashboard.html`` and ``features.json`` atomically. On the
command line: ``interp-steer dashboard --vector v.safetensors --output-dir DIR``.

JSON export (``features.json``), close to Neuronpedia's feature format (same key names where they exist; for
files in Neuronpedia's exact batch schema, see :func:`interp_steer.interpret.neuronpedia.to_neuronpedia`)::

    {
      "format": "interp_steer.features/1",
      "model": "SmolLM2-135M-Instruct",
      "vector": {"name", "method", "kind", "hook_points", "positions", "norms", "created"},
      "sae": {"id", "hook", "layer", "d_sae", "architecture", "content_hash"},
      "corpus": {"source", "n_texts", "n_tokens", "max_length"},
      "summary": {"kind", "n_nonzero", "n_for_50pct", "n_for_90pct"},   # from top_latents
      "steering_strengths": [λ, ...],
      "features": [                                   # one per latent, ranked by contribution
        {
          "modelId": str, "layer": int | null, "hook": str, "saeId": str, "index": int,
          "rank": int, "vectorValue": float,          # v_i (SAE-latent vector) or cosine(W_dec[i], v) (dense)
          "contribution": float, "cumulativeShare": float,
          "frac_nonzero": float,                      # density: fraction of corpus tokens where it fires
          "log10_density": float | null,              # null when it never fires
          "n_tokens": int, "n_firing": int,
          "maxActApprox": float, "meanActivation": float, "meanNonzeroActivation": float,
          "pos_str": [str], "pos_values": [float],    # logit lens: promoted tokens and their logit change
          "neg_str": [str], "neg_values": [float],    # suppressed tokens (values negative)
          "freq_hist_data_bar_values": [float],       # histogram of nonzero activations: bin centres
          "freq_hist_data_bar_heights": [int],        #   ... and counts
          "hist_bin_edges": [float],                  #   ... len(heights) + 1 edges, from 0 to the max
          "activations": [                            # top-activating snippets, one per text, best first
            {"tokens": [str], "values": [float], "maxValue": float, "maxValueTokenIndex": int,
             "textIndex": int, "position": int}
          ],
          "steering": [                               # empty without strengths
            {"strength": float, "meanActivation": float, "meanActivationUnsteered": float,
             "change": float, "frac_nonzero": float}
          ]
        }
      ]
    }

Optional inputs (generic, built by other tools):

* λ-sweep (:func:`load_sweep`): ``{"0": 0.31, "2": 0.45}`` (strength → metric); ``{"accuracy": {...},
  "rca": {...}}`` (several metrics); a list of records ``[{"strength": 2, "accuracy": 0.4, ...}]`` (key
  ``strength`` or ``lambda``); or any of these under ``"series"`` with optional ``"title"``, ``"x_title"``,
  ``"y_title"``.
* patching heatmap (:func:`load_patching`): ``{"values": [[...], ...], "x_labels": [...], "y_labels": [...],
  "title": ..., "x_title": ..., "y_title": ...}`` (``"z"`` is accepted for ``values``, ``"x"``/``"y"`` for
  the labels; labels default to indices), or a bare 2-D list; ``null`` cells are left blank.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp_steer.errors import InterpSteerError
from interp_steer.io import write_text_atomic
from interp_steer.validation import dumps as _strict_dumps

FORMAT = "interp_steer.features/1"
BAR_COLOR = "#636efa"  # the overview bar chart's colour (the browser test looks for it in the screenshot)
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}


# ------------------------------------------------------------------------------------------ build
def _layer_of(hook: str) -> int | None:
    parts = hook.split(".")
    return int(parts[1]) if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit() else None


def _sae_info(sae: Any, sae_id: str | None) -> dict[str, Any]:
    from interp_steer.saes import sae_reference

    ref = sae_reference(sae)
    ident = sae_id or (f"{ref.release}/{ref.sae_id}" if ref.release else (ref.path or f"sae-{ref.content_hash}"))
    return {"id": ident, "hook": ref.hook, "layer": _layer_of(ref.hook), "d_sae": ref.d_sae,
            "architecture": ref.architecture, "content_hash": ref.content_hash}


def _feature_entry(latent: dict[str, Any], rank: int, report: Any, model_id: str, sae: dict[str, Any]) -> dict:
    lens = report.logit_lens
    edges = report.hist_edges
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return {
        "modelId": model_id, "layer": sae["layer"], "hook": sae["hook"], "saeId": sae["id"],
        "index": report.index, "rank": rank, "vectorValue": latent["value"],
        "contribution": latent["contribution"], "cumulativeShare": latent["cumulative_share"],
        "frac_nonzero": report.density, "log10_density": report.log10_density,
        "n_tokens": report.n_tokens, "n_firing": report.n_firing,
        "maxActApprox": report.max_activation, "meanActivation": report.mean_activation,
        "meanNonzeroActivation": report.mean_nonzero,
        "pos_str": lens.promoted if lens else [], "pos_values": lens.promoted_values if lens else [],
        "neg_str": lens.suppressed if lens else [], "neg_values": lens.suppressed_values if lens else [],
        "freq_hist_data_bar_values": centres, "freq_hist_data_bar_heights": report.hist_counts,
        "hist_bin_edges": edges,
        "activations": [
            {"tokens": s.tokens, "values": s.values, "maxValue": s.max_value, "maxValueTokenIndex": s.max_index,
             "textIndex": s.text_index, "position": s.position}
            for s in report.snippets
        ],
        "steering": [
            {"strength": e.strength, "meanActivation": e.mean_activation,
             "meanActivationUnsteered": e.mean_activation_unsteered, "change": e.change,
             "frac_nonzero": e.density}
            for e in report.steering
        ],
    }


def build_features(
    model: Any,
    sae: Any,
    vector: Any,
    texts: Sequence[str],
    *,
    n_latents: int = 8,
    strengths: Sequence[float] = (),
    n_snippets: int = 8,
    max_length: int = 128,
    batch_size: int = 8,
    bins: int = 32,
    logit_lens_k: int = 10,
    vector_name: str | None = None,
    sae_id: str | None = None,
    corpus_source: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The JSON export (schema in the module docstring) for the top ``n_latents`` latents of ``vector``."""
    from interp_steer.interpret.features import top_latents
    from interp_steer.interpret.latents import inspect_latents

    if n_latents < 1:
        raise InterpSteerError("n_latents must be at least 1")
    vector.check_compatible(model, sae if vector.kind == "sae" else None)
    ranked = top_latents(vector, sae, None, k=n_latents)
    sae_info = _sae_info(sae, sae_id)
    model_id = str(model.cfg.model_name)
    features: list[dict[str, Any]] = []
    n_tokens = 0
    if ranked["latents"]:
        indices = [entry["index"] for entry in ranked["latents"]]
        insp = inspect_latents(model, sae, texts, indices, n_snippets=n_snippets, max_length=max_length,
                               batch_size=batch_size, bins=bins, logit_lens_k=logit_lens_k, vector=vector,
                               strengths=strengths, progress=progress)
        n_tokens = insp.n_tokens
        features = [_feature_entry(entry, rank, insp.report(entry["index"]), model_id, sae_info)
                    for rank, entry in enumerate(ranked["latents"], start=1)]
    meta = vector.metadata()
    return {
        "format": FORMAT,
        "model": model_id,
        "vector": {"name": vector_name, **{k: meta[k] for k in
                                           ("method", "kind", "hook_points", "positions", "norms", "created")}},
        "sae": sae_info,
        "corpus": {"source": corpus_source, "n_texts": len(texts), "n_tokens": n_tokens, "max_length": max_length},
        "summary": {k: ranked[k] for k in ("kind", "n_nonzero", "n_for_50pct", "n_for_90pct")},
        "steering_strengths": [float(s) for s in strengths],
        "features": features,
    }


# ----------------------------------------------------------------------------------- optional inputs
def _read_json(source: str | Path | Any, what: str) -> Any:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InterpSteerError(f"{what} file not found: {path}")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InterpSteerError(f"{what} file {path} is not valid JSON: {exc}") from exc
    return source


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InterpSteerError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError as exc:
        raise InterpSteerError(f"{where}: expected a number, got {value!r}") from exc


def _point(x: Any, y: Any, where: str) -> tuple[float, float | None]:
    strength = _number(x, f"{where}: strength {x!r}")
    if strength is None:
        raise InterpSteerError(f"{where}: the strength is missing")
    return strength, _number(y, f"{where} at strength {x}")


def _series(mapping: dict[str, Any], name: str) -> list[tuple[float, float | None]]:
    return [_point(key, value, f"sweep {name!r}") for key, value in mapping.items()]


def _is_pairs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value)


def load_sweep(source: str | Path | dict[str, Any] | list[Any]) -> dict[str, Any]:
    """Normalise a λ-sweep (file path or parsed JSON; formats in the module docstring) to
    ``{"title", "x_title", "y_title", "series": {name: [[strength, value], ...]}}`` (sorted by strength)."""
    data = _read_json(source, "sweep")
    title, x_title, y_title = "λ sweep", "strength λ", "metric"
    if isinstance(data, dict) and "series" in data:
        title = str(data.get("title", title))
        x_title, y_title = str(data.get("x_title", x_title)), str(data.get("y_title", y_title))
        data = data["series"]
    series: dict[str, list[tuple[float, float | None]]] = {}
    if isinstance(data, list):
        for n, record in enumerate(data):
            if not isinstance(record, dict):
                raise InterpSteerError(f"sweep record {n} is not an object: {record!r}")
            key = "strength" if "strength" in record else "lambda" if "lambda" in record else None
            if key is None:
                raise InterpSteerError(f"sweep record {n} has no 'strength' (or 'lambda') field: {sorted(record)}")
            for name, value in record.items():
                if name != key and (value is None or isinstance(value, (int, float))) and not isinstance(value, bool):
                    series.setdefault(str(name), []).append(_point(record[key], value, f"sweep record {n} {name!r}"))
    elif isinstance(data, dict) and data and all(_is_pairs(v) for v in data.values()):  # already normalised
        series = {str(name): [_point(p[0], p[1], f"sweep {name!r}") for p in points] for name, points in data.items()}
    elif isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        series = {str(name): _series(values, str(name)) for name, values in data.items()}
    elif isinstance(data, dict) and data:
        series = {"metric": _series(data, "metric")}
    if not series or not any(series.values()):
        raise InterpSteerError("sweep: expected {strength: value}, {metric: {strength: value}} or a list of "
                               "records with a 'strength' field; got nothing usable")
    return {"title": title, "x_title": x_title, "y_title": y_title,
            "series": {k: [list(p) for p in sorted(v, key=lambda p: p[0])] for k, v in series.items()}}


def _labels(data: dict[str, Any], keys: tuple[str, str], n: int, axis: str) -> list[str]:
    labels = data.get(keys[0], data.get(keys[1]))
    if labels is None:
        return [str(i) for i in range(n)]
    if not isinstance(labels, list) or len(labels) != n:
        raise InterpSteerError(f"patching: {axis} labels must be a list of {n} (one per "
                               f"{'column' if axis == 'x' else 'row'}), got {labels!r}")
    return [str(label) for label in labels]


def load_patching(source: str | Path | dict[str, Any] | list[Any]) -> dict[str, Any]:
    """Normalise a patching heatmap (file path or parsed JSON) to
    ``{"title", "x_title", "y_title", "values": rows × cols, "x_labels", "y_labels"}``."""
    data = _read_json(source, "patching")
    if isinstance(data, list):
        data = {"values": data}
    if not isinstance(data, dict):
        raise InterpSteerError("patching: expected an object with 'values' (a 2-D list) or a bare 2-D list")
    values = data.get("values", data.get("z"))
    if not isinstance(values, list) or not values or not all(isinstance(r, list) for r in values):
        raise InterpSteerError("patching: 'values' must be a non-empty 2-D list (a list of rows)")
    n_cols = len(values[0])
    if n_cols == 0 or any(len(r) != n_cols for r in values):
        raise InterpSteerError(f"patching: rows have different lengths {sorted({len(r) for r in values})}")
    grid = [[_number(v, f"patching cell [{i}][{j}]") for j, v in enumerate(r)] for i, r in enumerate(values)]
    x_labels = _labels(data, ("x_labels", "x"), n_cols, "x")
    y_labels = _labels(data, ("y_labels", "y"), len(values), "y")
    return {"title": str(data.get("title", "activation patching")), "x_title": str(data.get("x_title", "")),
            "y_title": str(data.get("y_title", "")), "values": grid, "x_labels": x_labels, "y_labels": y_labels}


# ------------------------------------------------------------------------------------------- render
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:16px;margin:0 0 6px 0} .meta{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px} td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}
.card{border:1px solid #ddd;border-radius:6px;padding:12px;margin:14px 0}
.grid{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:16px}
.snip{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;white-space:pre-wrap;margin:3px 0;
      padding:3px;border-bottom:1px dotted #eee;line-height:1.7}
.tok{border-radius:2px}
.tok.max{outline:2px solid #c0392b;font-weight:bold}
.lens{display:flex;gap:18px} .pos{color:#1a7f37} .neg{color:#b42318}
.tokcell{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre}
.plot{min-height:240px}
"""


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def _show_token(token: str) -> str:
    return html.escape(token.replace("\n", "↵"))


def _figure_html(fig: Any, div_id: str, *, modebar: bool = True) -> str:
    config = {**_PLOT_CONFIG, "displayModeBar": modebar}
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=config))


def _snippet_html(act: dict[str, Any], scale: float) -> str:
    spans = []
    for i, (token, value) in enumerate(zip(act["tokens"], act["values"], strict=True)):
        alpha = max(0.0, min(1.0, value / scale)) if scale > 0 else 0.0
        style = f"background:rgba(255,140,0,{alpha:.3f})" if alpha > 0 else ""
        cls = "tok max" if i == act["maxValueTokenIndex"] else "tok"
        spans.append(f'<span class="{cls}" style="{style}" title="{value:.4g}">{_show_token(token)}</span>')
    return (f'<div class="snip"><span class="meta">[{act["maxValue"]:.3g} · text {act["textIndex"]}]</span> '
            + "".join(spans) + "</div>")


def _lens_html(feat: dict[str, Any]) -> str:
    def table(cls: str, title: str, tokens: list[str], values: list[float]) -> str:
        rows = "".join(f'<tr><td class="tokcell">{_show_token(t)}</td><td class="num {cls}">{v:+.3f}</td></tr>'
                       for t, v in zip(tokens, values, strict=True))
        return f"<table><tr><th>{title}</th><th>logit</th></tr>{rows}</table>"

    return ('<div class="lens">' + table("pos", "promoted", feat["pos_str"], feat["pos_values"])
            + table("neg", "suppressed", feat["neg_str"], feat["neg_values"]) + "</div>")


def _histogram_fig(feat: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    edges = feat["hist_bin_edges"]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fig = go.Figure(go.Bar(x=feat["freq_hist_data_bar_values"], y=feat["freq_hist_data_bar_heights"],
                           width=widths, marker_color="#e67e22", name="tokens"))
    fig.update_layout(title=dict(text=f"nonzero activations (density {_fmt(100 * feat['frac_nonzero'])} %)",
                                 font_size=13), height=240,
                      margin=dict(l=40, r=10, t=36, b=36), xaxis_title="activation", yaxis_title="tokens",
                      template="plotly_white", bargap=0)
    return fig


def _overview_fig(features: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = [f"#{f['index']}" for f in features]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=labels, y=[f["contribution"] for f in features], marker_color=BAR_COLOR,
                         name="contribution"), secondary_y=False)
    fig.add_trace(go.Scatter(x=labels, y=[f["cumulativeShare"] for f in features], mode="lines+markers",
                             name="cumulative share", line_color="#333"), secondary_y=True)
    fig.update_layout(title="latents by contribution to the vector", height=320, template="plotly_white",
                      margin=dict(l=50, r=50, t=40, b=40), legend=dict(orientation="h", y=-0.2))
    fig.update_yaxes(title_text="contribution", secondary_y=False)
    fig.update_yaxes(title_text="cumulative share", range=[0, 1.05], secondary_y=True)
    return fig


def _steering_fig(features: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for f in features:
        points = sorted([(0.0, f["meanActivation"])] + [(s["strength"], s["meanActivation"]) for s in f["steering"]])
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=f"#{f['index']}"))
    fig.update_layout(title="mean latent activation under steering (λ = 0: unsteered)", height=340,
                      template="plotly_white", xaxis_title="strength λ", yaxis_title="mean activation",
                      margin=dict(l=50, r=20, t=40, b=40))
    return fig


def _sweep_fig(sweep: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, points in sweep["series"].items():
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=name))
    fig.update_layout(title=sweep["title"], height=360, template="plotly_white", xaxis_title=sweep["x_title"],
                      yaxis_title=sweep["y_title"], margin=dict(l=50, r=20, t=40, b=40))
    return fig


def _patching_fig(patching: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=patching["values"], x=patching["x_labels"], y=patching["y_labels"],
                               colorscale="RdBu", zmid=0, hoverongaps=False))
    fig.update_layout(title=patching["title"], template="plotly_white", xaxis_title=patching["x_title"],
                      yaxis_title=patching["y_title"], height=max(320, 22 * len(patching["y_labels"]) + 120),
                      margin=dict(l=80, r=20, t=40, b=60))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def render_html(features: dict[str, Any], *, sweep: Any | None = None, patching: Any | None = None,
                title: str | None = None) -> str:
    """One self-contained HTML page from a :func:`build_features` export (plotly.js inlined once).

    ``sweep`` / ``patching`` are anything :func:`load_sweep` / :func:`load_patching` accept.
    """
    from plotly.offline import get_plotlyjs

    sweep_n = load_sweep(sweep) if sweep is not None else None
    patch_n = load_patching(patching) if patching is not None else None
    vec, sae, corpus, summary = features["vector"], features["sae"], features["corpus"], features["summary"]
    feats = features["features"]
    name = vec.get("name") or f"{vec['method']} vector"
    page_title = title or f"interp-steer dashboard: {name}"
    norms = ", ".join(f"{h}: {n:.3g}" for h, n in vec["norms"].items())
    parts = [
        f"<h1>{html.escape(page_title)}</h1>",
        f'<p class="meta">model <b>{html.escape(features["model"])}</b> · vector <b>{html.escape(str(name))}</b> '
        f"({html.escape(vec['method'])}, {html.escape(vec['kind'])}; norm {html.escape(norms)}) · SAE "
        f"<b>{html.escape(str(sae['id']))}</b> at {html.escape(sae['hook'])} ({sae['d_sae']} latents, "
        f"{html.escape(sae['architecture'])}) · corpus {html.escape(str(corpus.get('source') or 'texts'))}: "
        f"{corpus['n_texts']} texts, {corpus['n_tokens']} tokens</p>",
        f'<p class="meta">{summary["n_nonzero"]} latents with a nonzero contribution; '
        f"{summary['n_for_50pct']} carry 50 % of it, {summary['n_for_90pct']} carry 90 %.</p>",
    ]
    if not feats:
        parts.append("<p><b>This vector uses no SAE latent (its contribution is zero everywhere).</b></p>")
    else:
        parts.append("<h2>Top latents</h2>")
        parts.append(_figure_html(_overview_fig(feats), "overview"))
        rows = "".join(
            f"<tr><td>{f['rank']}</td><td><a href='#latent-{f['index']}'>#{f['index']}</a></td>"
            f"<td class='num'>{_fmt(f['vectorValue'])}</td><td class='num'>{_fmt(f['contribution'])}</td>"
            f"<td class='num'>{_fmt(100 * f['cumulativeShare'])} %</td>"
            f"<td class='num'>{_fmt(100 * f['frac_nonzero'])} %</td><td class='num'>{_fmt(f['maxActApprox'])}</td>"
            f"<td class='tokcell'>{_show_token(' | '.join(f['pos_str'][:5]))}</td></tr>"
            for f in feats
        )
        parts.append("<table><tr><th>rank</th><th>latent</th><th>value</th><th>contribution</th><th>cum. share</th>"
                     f"<th>density</th><th>max act.</th><th>promotes</th></tr>{rows}</table>")
        if features.get("steering_strengths"):
            parts.append("<h2>Latent activation under steering</h2>")
            parts.append(_figure_html(_steering_fig(feats), "steering"))
        for f in feats:
            scale = f["maxActApprox"] or max((a["maxValue"] for a in f["activations"]), default=0.0)
            snippets = "".join(_snippet_html(a, scale) for a in f["activations"]) or \
                '<p class="meta">never fires on this corpus</p>'
            steering = "".join(f"λ={s['strength']:g}: {s['meanActivation']:.3g} ({s['change']:+.3g}); "
                               for s in f["steering"])
            stats = (f"value {_fmt(f['vectorValue'])} · density {_fmt(100 * f['frac_nonzero'])} % "
                     f"(log10 {_fmt(f['log10_density'])}) · max {_fmt(f['maxActApprox'])} · mean "
                     f"{_fmt(f['meanActivation'])}" + (f" · steered mean: {steering}" if steering else ""))
            hist = (_figure_html(_histogram_fig(f), f"hist-{f['index']}", modebar=False)
                    if f["freq_hist_data_bar_heights"]
                    else '<p class="meta">no nonzero activations</p>')
            parts.append(
                f'<div class="card" id="latent-{f["index"]}"><h3>#{f["rank"]} · latent {f["index"]}</h3>'
                f'<p class="meta">{html.escape(stats)}</p><div class="grid"><div><b>top activations</b>{snippets}'
                f"</div><div>{_lens_html(f)}{hist}</div></div></div>"
            )
    if sweep_n is not None:
        parts.append("<h2>λ sweep</h2>" + _figure_html(_sweep_fig(sweep_n), "sweep"))
    if patch_n is not None:
        parts.append("<h2>Activation patching</h2>" + _figure_html(_patching_fig(patch_n), "patching"))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(page_title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n<body>\n{body}\n</body></html>\n'
    )


# -------------------------------------------------------------------------------------------- write
@dataclass
class Dashboard:
    features: dict[str, Any]
    html: str

    def write(self, output_dir: str | Path) -> tuple[Path, Path]:
        """Write ``dashboard.html`` and ``features.json`` (each atomically) into ``output_dir``."""
        out = Path(output_dir)
        html_path, json_path = out / "dashboard.html", out / "features.json"
        write_text_atomic(json_path, _strict_dumps(self.features, indent=2, ensure_ascii=False))
        write_text_atomic(html_path, self.html)
        return html_path, json_path


def build_dashboard(
    model: Any, sae: Any, vector: Any, texts: Sequence[str], *, sweep: Any | None = None,
    patching: Any | None = None, title: str | None = None, **kwargs: Any,
) -> Dashboard:
    """:func:`build_features` + :func:`render_html` (``kwargs`` go to :func:`build_features`)."""
    sweep_n = load_sweep(sweep) if sweep is not None else None  # validate before the model pass
    patch_n = load_patching(patching) if patching is not None else None
    features = build_features(model, sae, vector, texts, **kwargs)
    return Dashboard(features, render_html(features, sweep=sweep_n, patching=patch_n, title=title))


__all__ = ["FORMAT", "Dashboard", "build_dashboard", "build_features", "load_patching", "load_sweep",
           "render_html"]
