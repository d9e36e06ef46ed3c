"""Feature dashboards: JSON export, the Neuronpedia batch export (checked against a fixture in SAEDashboard's
batch schema, tests/data/neuronpedia), a self-contained HTML page rendered by a real headless Chromium, the
``interp-steer dashboard`` command, and one slow run on the real model with the shipped SAE."""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from interp_steer import cli
from interp_steer.errors import InterpSteerError
from interp_steer.interpret.dashboard import (
    BAR_COLOR,
    FORMAT,
    build_dashboard,
    build_features,
    load_patching,
    load_sweep,
    render_html,
)
from interp_steer.interpret.features import top_latents
from interp_steer.interpret.latents import inspect_latents
from interp_steer.interpret.neuronpedia import EMPTY_FEATURE_KEYS, neuronpedia_batches, to_neuronpedia
from interp_steer.models import model_fingerprint
from interp_steer.saes import sae_reference
from interp_steer.steering import SteeringVector

from .conftest import TINY_HOOK, make_sae
from .test_latents import TEXTS

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome",
                  "headless_shell")
APT_HINT = "apt-get install -y --no-install-recommends chromium"
SWEEP = {"accuracy": {"0": 0.2, "2": 0.35, "4": 0.5}, "rca": {"0": 0.1, "2": 0.2, "4": 0.15}}
PATCHING = {"values": [[0.1, -0.4, 0.0], [0.8, None, -0.2]], "x_labels": ["tok 0", "tok 1", "tok 2"],
            "y_labels": ["layer 0", "layer 1"], "title": "patching", "x_title": "position", "y_title": "layer"}


# ------------------------------------------------------------------------------------------ helpers
def _sae_vector(model, sae, values: dict[int, float]) -> SteeringVector:
    v = torch.zeros(sae.cfg.d_sae)
    for i, x in values.items():
        v[i] = x
    return SteeringVector("yapo", "sae", {TINY_HOOK: {"latent": v}}, model_fingerprint(model).to_dict(),
                          sae=sae_reference(sae).to_dict())


@pytest.fixture(scope="module")
def setup(tiny_model):
    """A tiny TopK SAE and an SAE-latent vector on five latents that fire on TEXTS (so histograms exist)."""
    sae = make_sae("topk", tiny_model.cfg.d_model, 96, TINY_HOOK, seed=5)
    insp = inspect_latents(tiny_model, sae, TEXTS, list(range(96)), n_snippets=0, logit_lens_k=0)
    firing = [r.index for r in sorted(insp.reports, key=lambda r: -r.n_firing) if r.n_firing][:5]
    assert len(firing) == 5
    vec = _sae_vector(tiny_model, sae, dict(zip(firing, [3.0, -2.0, 1.5, 1.0, 0.5], strict=True)))
    return sae, vec, firing


@pytest.fixture(scope="module")
def dashboard(tiny_model, setup):
    sae, vec, _ = setup
    return build_dashboard(tiny_model, sae, vec, TEXTS, n_latents=5, strengths=[1.0, 4.0], n_snippets=4,
                           sweep=SWEEP, patching=PATCHING, vector_name="tiny.safetensors")


class _Resources(HTMLParser):
    """Every URL-valued attribute of the page, and whether each <script> is inline."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts_with_src = 0
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "data", "poster", "srcset", "action", "xlink:href") and value:
                self.urls.append(value)
        if tag == "script":
            self.scripts += 1
            self.scripts_with_src += any(n == "src" for n, _ in attrs)


def find_chromium() -> str:
    for name in (os.environ.get("INTERP_STEER_CHROMIUM"), *CHROMIUM_NAMES):
        if name and shutil.which(name):
            return str(shutil.which(name))
    pytest.skip(f"no Chromium found ({', '.join(CHROMIUM_NAMES)} not on PATH); install it with `{APT_HINT}`")


def render_in_chromium(html_path: Path, workdir: Path) -> tuple[str, np.ndarray]:
    """(DOM after scripts ran, screenshot pixels) from a real headless Chromium, offline."""
    exe = find_chromium()
    url = html_path.resolve().as_uri()
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
              "--disable-extensions", f"--user-data-dir={workdir / 'chromium-profile'}",
              "--virtual-time-budget=20000"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    png = workdir / "screenshot.png"
    shot = subprocess.run([*common, f"--screenshot={png}", "--window-size=1200,2000", url],
                          capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    return dom.stdout, read_png(png)


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB(A) PNG (what Chromium writes) to an ``[h, w, channels]`` array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0 and color in (2, 6), header
    bpp = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    prev = np.zeros(width * bpp, dtype=np.int64)
    for y in range(height):
        line, kind = raw[y, 1:].astype(np.int64), int(raw[y, 0])
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: running sum per channel
            cur = line.reshape(width, bpp).cumsum(0).reshape(-1) & 255
        elif kind == 2:  # Up
            cur = (line + prev) & 255
        else:  # Average / Paeth: sequential along the row
            row, up = line.tolist(), prev.tolist()
            for i in range(len(row)):
                a = row[i - bpp] if i >= bpp else 0
                b = up[i]
                if kind == 3:
                    row[i] = (row[i] + ((a + b) >> 1)) & 255
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            cur = np.array(row, dtype=np.int64)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)


def _n_figures(features: dict, sweep: bool, patching: bool) -> int:
    feats = features["features"]
    return (1 + bool(features["steering_strengths"]) + sum(bool(f["freq_hist_data_bar_heights"]) for f in feats)
            + sweep + patching)


# ------------------------------------------------------------------------------------------ export
def test_features_json_follows_the_schema(tiny_model, setup, dashboard):
    sae, vec, firing = setup
    data = json.loads(json.dumps(dashboard.features, allow_nan=False))  # plain JSON, no NaN/inf
    assert data["format"] == FORMAT and data["model"] == tiny_model.cfg.model_name
    assert data["sae"]["hook"] == TINY_HOOK and data["sae"]["layer"] == 1 and data["sae"]["d_sae"] == 96
    assert data["corpus"]["n_texts"] == len(TEXTS) and data["steering_strengths"] == [1.0, 4.0]
    ranked = top_latents(vec, sae, k=5)
    assert [f["index"] for f in data["features"]] == [e["index"] for e in ranked["latents"]]
    assert sorted(f["index"] for f in data["features"]) == sorted(firing)
    assert data["summary"]["n_nonzero"] == 5
    insp = inspect_latents(tiny_model, sae, TEXTS, firing, n_snippets=4, vector=vec, strengths=[1.0, 4.0])
    for rank, feat in enumerate(data["features"], start=1):
        rep = insp.report(feat["index"])
        assert feat["rank"] == rank and feat["saeId"] == data["sae"]["id"] and feat["hook"] == TINY_HOOK
        assert feat["frac_nonzero"] == pytest.approx(rep.density) and feat["n_firing"] == rep.n_firing > 0
        assert feat["vectorValue"] == pytest.approx(float(vec.vector()[feat["index"]]))
        assert feat["pos_str"] == rep.logit_lens.promoted and feat["neg_values"] == rep.logit_lens.suppressed_values
        assert len(feat["pos_str"]) == len(feat["pos_values"]) == 10
        heights, centres, edges = (feat["freq_hist_data_bar_heights"], feat["freq_hist_data_bar_values"],
                                   feat["hist_bin_edges"])
        assert sum(heights) == feat["n_firing"] and len(edges) == len(heights) + 1 == len(centres) + 1
        assert all(a < c < b for a, c, b in zip(edges[:-1], centres, edges[1:], strict=True))
        assert feat["activations"], "a firing latent has snippets"
        for act in feat["activations"]:
            assert set(act) == {"tokens", "values", "maxValue", "maxValueTokenIndex", "textIndex", "position"}
            assert len(act["tokens"]) == len(act["values"])
            assert act["values"][act["maxValueTokenIndex"]] == pytest.approx(act["maxValue"]) == max(act["values"])
        assert [a["maxValue"] for a in feat["activations"]] == sorted((a["maxValue"] for a in feat["activations"]),
                                                                      reverse=True)
        assert feat["maxActApprox"] == pytest.approx(feat["activations"][0]["maxValue"])
        assert [s["strength"] for s in feat["steering"]] == [1.0, 4.0]
        for s, e in zip(feat["steering"], rep.steering, strict=True):
            assert s["change"] == pytest.approx(s["meanActivation"] - s["meanActivationUnsteered"])
            assert s["meanActivation"] == pytest.approx(e.mean_activation, rel=1e-5, abs=1e-7)


def test_sweep_and_patching_inputs():
    one = load_sweep({"4": 0.5, "0": 0.1, "-2": None})
    assert one["series"] == {"metric": [[-2.0, None], [0.0, 0.1], [4.0, 0.5]]}
    many = load_sweep({"title": "MCQ", "series": SWEEP})
    assert many["title"] == "MCQ" and many["series"]["rca"] == [[0.0, 0.1], [2.0, 0.2], [4.0, 0.15]]
    records = load_sweep([{"strength": 2, "acc": 0.3, "note": "x"}, {"lambda": 0, "acc": 0.1}])
    assert records["series"] == {"acc": [[0.0, 0.1], [2.0, 0.3]]}
    assert load_sweep(many) == many  # normalised input is accepted as is
    heat = load_patching([[1, 2], [3, 4], [5, 6]])
    assert heat["x_labels"] == ["0", "1"] and heat["y_labels"] == ["0", "1", "2"]
    assert load_patching(PATCHING)["values"][1] == [0.8, None, -0.2]
    for bad, message in [({"a": "b"}, "expected a number"), ({}, "nothing usable"), ([{"acc": 1}], "strength")]:
        with pytest.raises(InterpSteerError, match=message):
            load_sweep(bad)
    for bad, message in [({"values": [[1, 2], [3]]}, "different lengths"), ({"values": []}, "non-empty"),
                         ({"values": [[1, 2]], "x_labels": ["a"]}, "x labels must be a list of 2"),
                         ({"values": [["x"]]}, "number")]:
        with pytest.raises(InterpSteerError, match=message):
            load_patching(bad)


# -------------------------------------------------------------------------------------- neuronpedia
NEURONPEDIA_FIXTURE = Path(__file__).parent / "data" / "neuronpedia" / "batch-0.json"  # sources: SOURCE.md there
# what Neuronpedia's converter indexes in each feature / activation (SAEDashboard @ db4839a,
# sae_dashboard/neuronpedia/neuronpedia_export.py, _process_batch)
IMPORTER_FEATURE_KEYS = (
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
    "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1", "neg_str",
    "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_heights",
    "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
    "decoder_weights_dist", "activations",
)
IMPORTER_ACTIVATION_KEYS = ("tokens", "values", "bin_contains", "bin_max", "bin_min", "qualifying_token_index")


def _json_type(value) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"),
                       (dict, "dict")):
        if isinstance(value, kind):
            return name
    raise TypeError(f"not a JSON value: {value!r}")


def _conforms(ours, ref, path: str = "$") -> list[str]:
    """Where ``ours`` differs from ``ref`` in keys (and their order), nesting or JSON types, at every level
    ([] when nowhere). A list conforms when each of its items conforms to some item of the reference list, so
    an empty list always does (SAEDashboard leaves uncomputed tables empty)."""
    if _json_type(ours) != _json_type(ref):
        return [f"{path}: {_json_type(ours)} where the fixture has {_json_type(ref)}"]
    if isinstance(ref, dict):
        if list(ours) != list(ref):
            return [f"{path}: keys {list(ours)} != the fixture's {list(ref)}"]
        return [p for key in ref for p in _conforms(ours[key], ref[key], f"{path}.{key}")]
    if isinstance(ref, list):
        if ours and not ref:
            return [f"{path}: {len(ours)} items where the fixture's list is empty"]
        problems: list[str] = []
        for i, item in enumerate(ours):
            attempts = [_conforms(item, r, f"{path}[{i}]") for r in ref]
            if all(attempts):
                problems.extend(min(attempts, key=len))
        return problems
    return []


@pytest.fixture(scope="module")
def np_batches(dashboard):
    return neuronpedia_batches(dashboard, sae_set="interp-steer-tiny", features_per_batch=2)


def test_fixture_comparison_catches_schema_drift():
    fixture = json.loads(NEURONPEDIA_FIXTURE.read_text())
    assert _conforms(fixture, fixture) == []
    assert len(fixture["features"][0]) == 25 and fixture["sae_id_suffix"] is None
    for mutate in (lambda d: d["features"][0].pop("frac_nonzero"), lambda d: d.update(layer="0"),
                   lambda d: d["features"][0]["activations"][0].update(values=[1, 2]),
                   lambda d: d["features"][0].update(pos_values=[[1.0]]), lambda d: d.pop("sae_id_suffix"),
                   lambda d: d["features"][0]["activations"][1].update(extra=1),
                   lambda d: d["features"][0].update(vector=[0.5])):
        bad = copy.deepcopy(fixture)
        mutate(bad)
        assert _conforms(bad, fixture), "the comparison must notice the change"


def test_neuronpedia_batches_follow_the_fixture_schema(np_batches):
    fixture = json.loads(NEURONPEDIA_FIXTURE.read_text())
    assert [len(b["features"]) for b in np_batches] == [2, 2, 1]
    for batch in np_batches:
        parsed = json.loads(json.dumps(batch, allow_nan=False))  # strict JSON
        assert parsed == batch
        assert _conforms(parsed, fixture) == []
        assert all(f["activations"] for f in parsed["features"])  # so the activation schema was compared too


def test_neuronpedia_values_come_from_the_dashboard(tiny_model, dashboard, np_batches):
    data = dashboard.features
    by_index = {f["index"]: f for f in data["features"]}
    exported = [f for b in np_batches for f in b["features"]]
    assert [f["feature_index"] for f in exported] == sorted(by_index)  # each latent once, by index
    for batch in np_batches:
        assert (batch["model_id"], batch["layer"], batch["sae_set"], batch["sae_id_suffix"]) == (
            tiny_model.cfg.model_name, 1, "interp-steer-tiny", None)
    for feat in exported:
        ours = by_index[feat["feature_index"]]
        assert feat["pos_str"] == ours["pos_str"] and feat["neg_str"] == ours["neg_str"]
        assert feat["pos_values"] == pytest.approx(ours["pos_values"], abs=1e-5)
        assert feat["neg_values"] == pytest.approx(ours["neg_values"], abs=1e-5)
        assert feat["frac_nonzero"] == ours["frac_nonzero"] > 0
        assert feat["freq_hist_data_bar_heights"] == ours["freq_hist_data_bar_heights"]
        assert feat["freq_hist_data_bar_values"] == pytest.approx(ours["freq_hist_data_bar_values"], abs=1e-5)
        assert (feat["n_prompts_total"], feat["n_tokens_in_prompt"], feat["dataset"]) == (
            len(TEXTS), data["corpus"]["max_length"], "")
        assert all(feat[key] == [] for key in EMPTY_FEATURE_KEYS)  # not computed: empty, as SAEDashboard
        assert len(feat["activations"]) == len(ours["activations"]) > 0
        for act, snippet in zip(feat["activations"], ours["activations"], strict=True):
            assert act["tokens"] == snippet["tokens"]
            assert act["values"] == pytest.approx(snippet["values"], abs=1e-5)
            assert act["qualifying_token_index"] == snippet["maxValueTokenIndex"]
            assert (act["bin_min"], act["bin_contains"]) == (-1, -1)  # SAEDashboard's "TOP ACTIVATIONS" group
            assert act["bin_max"] == pytest.approx(ours["maxActApprox"], abs=1e-5)


def test_neuronpedia_batches_read_like_the_importer(dashboard, np_batches):
    """Walk the batches as Neuronpedia's converter does: the keys it indexes, max/argmax of each snippet."""
    by_index = {f["index"]: f for f in dashboard.features["features"]}
    for batch in json.loads(json.dumps(np_batches)):
        assert batch["model_id"] and isinstance(batch["layer"], int) and "sae_id_suffix" in batch
        for feat in batch["features"]:
            assert all(key in feat for key in IMPORTER_FEATURE_KEYS)
            ours = by_index[feat["feature_index"]]
            max_act_approx = 0.0
            for act, snippet in zip(feat["activations"], ours["activations"], strict=True):
                assert all(key in act for key in IMPORTER_ACTIVATION_KEYS)
                values = act["values"]
                top = max(values)
                max_act_approx = max(max_act_approx, top)
                assert top == pytest.approx(snippet["maxValue"], abs=1e-5)
                assert values[snippet["maxValueTokenIndex"]] == top
            assert max_act_approx == pytest.approx(ours["maxActApprox"], abs=1e-5)


def test_to_neuronpedia_writes_batch_files(dashboard, np_batches, tmp_path):
    out = tmp_path / "np"
    paths = to_neuronpedia(dashboard, out, sae_set="interp-steer-tiny", features_per_batch=2)
    assert [p.name for p in paths] == ["batch-0.json", "batch-1.json", "batch-2.json"]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in paths]  # no temporary files left
    assert [json.loads(p.read_text()) for p in paths] == np_batches
    with pytest.raises(InterpSteerError, match="already holds 3 batch file"):
        to_neuronpedia(dashboard, out, sae_set="interp-steer-tiny")
    # from features.json, overwriting: one batch now, the stale batch-1/2 are removed
    _, json_path = dashboard.write(tmp_path / "dash")
    paths = to_neuronpedia(json_path, out, overwrite=True, sae_set="interp-steer-tiny", features_per_batch=5)
    assert sorted(p.name for p in out.iterdir()) == ["batch-0.json"]
    assert json.loads(paths[0].read_text())["features"] == [f for b in np_batches for f in b["features"]]
    # defaults: model name, the hook's layer, a slug of the SAE id
    default = neuronpedia_batches(dashboard)[0]
    assert default["layer"] == 1 and re.fullmatch(r"[a-z0-9-]+", default["sae_set"])


def _set_first_value(data: dict, value) -> None:
    data["features"][0]["activations"][0]["values"][0] = value


@pytest.mark.parametrize("change, options, message", [
    (None, {"sae_set": "bad set"}, "sae_set: 'bad set' is not a usable Neuronpedia name"),
    (None, {"sae_set": "res__jb"}, "no '__'"),
    (None, {"features_per_batch": 0}, "features_per_batch: expected an integer ≥ 1"),
    (None, {"model_id": "org/model"}, "model_id: 'org/model' is not a usable"),
    (None, {"layer": -1}, "layer: expected a non-negative integer"),
    (lambda d: d["sae"].update(layer=None, hook="hook_embed"), {}, "names no block"),
    (lambda d: d.update(features=[]), {}, "nothing to export"),
    (lambda d: _set_first_value(d, float("nan")), {}, r"activations\[0\]\.values\[0\]: expected a finite number"),
    (lambda d: _set_first_value(d, "0.1"), {}, "expected a finite number, got '0.1'"),
    (lambda d: d["features"][0]["activations"][0]["tokens"].pop(), {}, "tokens and values have different lengths"),
    (lambda d: d["features"][1].update(index=d["features"][0]["index"]), {}, "latent indices repeat"),
    (lambda d: d["features"][0].update(frac_nonzero=1.5), {}, "not a fraction"),
    (lambda d: d.update(format="other/1"), {}, "format"),
])
def test_neuronpedia_refuses_bad_input(dashboard, change, options, message):
    source = dashboard
    if change is not None:
        source = copy.deepcopy(dashboard.features)
        change(source)
    with pytest.raises(InterpSteerError, match=message) as info:
        neuronpedia_batches(source, **options)
    assert "\n" not in str(info.value) and str(info.value).startswith("Neuronpedia export: ")


def test_neuronpedia_refuses_bad_paths(dashboard, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InterpSteerError, match="is an existing file, not a folder"):
        to_neuronpedia(dashboard, tmp_path / "file")
    with pytest.raises(InterpSteerError, match="features file not found"):
        neuronpedia_batches(tmp_path / "missing.json")
    with pytest.raises(InterpSteerError, match="not valid JSON"):
        neuronpedia_batches(tmp_path / "file")
    with pytest.raises(InterpSteerError, match="expected a dashboard"):
        neuronpedia_batches([1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# --------------------------------------------------------------------------------------------- html
def test_html_is_self_contained(dashboard):
    from plotly.offline import get_plotlyjs

    page = dashboard.html
    parser = _Resources()
    parser.feed(page)
    external = [u for u in parser.urls if re.match(r"\s*(https?:)?//", u, re.I)]
    assert external == [] and parser.scripts_with_src == 0
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page) and "@import" not in page
    assert page.count(get_plotlyjs()[:300]) == 1  # plotly.js inlined exactly once
    n_fig = _n_figures(dashboard.features, True, True)
    assert page.count("Plotly.newPlot(") == n_fig and n_fig == 1 + 1 + 5 + 2
    for feat in dashboard.features["features"]:
        assert f'id="latent-{feat["index"]}"' in page
        assert page.count('class="tok max"') >= 1
    assert "<h2>λ sweep</h2>" in page and "<h2>Activation patching</h2>" in page


def test_html_renders_in_headless_chromium(dashboard, tmp_path):
    html_path, json_path = dashboard.write(tmp_path / "out")
    assert json.loads(json_path.read_text())["format"] == FORMAT
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dashboard.html", "features.json"]
    dom, pixels = render_in_chromium(html_path, tmp_path)
    n_fig = _n_figures(dashboard.features, True, True)
    assert dom.count('class="plot-container plotly"') == n_fig  # every figure was drawn by plotly.js
    assert dom.count('class="main-svg"') >= 2 * n_fig
    assert dom.count('class="trace bars"') >= 1 + 5  # overview bars + one histogram per latent
    assert 'class="hm"' in dom  # the patching heatmap
    # the screenshot is not blank and shows the overview bar chart in its colour
    rgb = pixels[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50
    bar = np.array([int(BAR_COLOR[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    assert int(np.all(rgb == bar, axis=-1).sum()) > 5000


def test_empty_vector_gives_a_page_without_latents(tiny_model, setup):
    sae, _, _ = setup
    vec = _sae_vector(tiny_model, sae, {})
    features = build_features(tiny_model, sae, vec, TEXTS[:2])
    assert features["features"] == [] and features["summary"]["n_nonzero"] == 0
    page = render_html(features)
    assert "uses no SAE latent" in page and page.count("Plotly.newPlot(") == 0


# ---------------------------------------------------------------------------------------------- CLI
def _main(monkeypatch, capsys, model, *argv: str) -> tuple[int, str, str]:
    """``interp-steer dashboard ...`` through cli.main (the real parser: the CLI must know the subcommand)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "dashboard" in sub.choices
    monkeypatch.setattr(cli, "_model", lambda args: model)
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_dashboard_command(monkeypatch, capsys, tiny_model, setup, tmp_path):
    from interp_steer.saes import load_sae

    sae, _, firing = setup
    sae.save_model(str(tmp_path / "sae"))
    loaded = load_sae(path=tmp_path / "sae", model=tiny_model)
    vec_path = _sae_vector(tiny_model, loaded, {firing[0]: 2.0, firing[1]: 1.0}).save(tmp_path / "v")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(t.replace("\n", " ") for t in TEXTS))  # .txt: one text per line
    (tmp_path / "sweep.json").write_text(json.dumps({"0": 0.1, "4": 0.3}))
    (tmp_path / "patch.json").write_text(json.dumps(PATCHING))
    out = tmp_path / "dash"
    code, stdout, err = _main(monkeypatch, capsys, tiny_model, "dashboard", "--vector", str(vec_path), "--sae",
                              str(tmp_path / "sae"), "--texts", str(texts), "--n-latents", "2", "--strengths",
                              "-2", "2", "--sweep", str(tmp_path / "sweep.json"), "--patching",
                              str(tmp_path / "patch.json"), "--output-dir", str(out))
    assert code == 0, err
    data = json.loads((out / "features.json").read_text())
    assert [f["index"] for f in data["features"]] == firing[:2]
    assert data["steering_strengths"] == [-2.0, 2.0] and data["corpus"]["n_texts"] == len(TEXTS)
    page = (out / "dashboard.html").read_text()
    assert page.count("Plotly.newPlot(") == _n_figures(data, True, True)
    assert str(out / "dashboard.html") in stdout
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_dashboard_command_neuronpedia(monkeypatch, capsys, tiny_model, setup, tmp_path):
    from interp_steer.saes import load_sae

    sae, _, firing = setup
    sae.save_model(str(tmp_path / "sae"))
    loaded = load_sae(path=tmp_path / "sae", model=tiny_model)
    vec_path = _sae_vector(tiny_model, loaded, {firing[0]: 2.0, firing[1]: 1.0, firing[2]: 0.5}).save(tmp_path / "v")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(t.replace("\n", " ") for t in TEXTS))
    np_dir = tmp_path / "np"
    np_dir.mkdir()
    (np_dir / "batch-7.json").write_text("{}")  # left from an earlier export: the importer would read it
    code, stdout, err = _main(monkeypatch, capsys, tiny_model, "dashboard", "--vector", str(vec_path), "--sae",
                              str(tmp_path / "sae"), "--texts", str(texts), "--n-latents", "3", "--strengths",
                              "--max-length", "64", "--output-dir", str(tmp_path / "dash"), "--neuronpedia",
                              str(np_dir), "--neuronpedia-set", "tiny-res", "--neuronpedia-features-per-batch", "2")
    assert code == 0, err
    assert sorted(p.name for p in np_dir.iterdir()) == ["batch-0.json", "batch-1.json"]
    data = json.loads((tmp_path / "dash" / "features.json").read_text())
    batches = [json.loads((np_dir / f"batch-{n}.json").read_text()) for n in range(2)]
    assert [len(b["features"]) for b in batches] == [2, 1]
    assert [f["feature_index"] for b in batches for f in b["features"]] == sorted(f["index"] for f in data["features"])
    for batch in batches:
        assert (batch["model_id"], batch["layer"], batch["sae_set"]) == (tiny_model.cfg.model_name, 1, "tiny-res")
        for feat in batch["features"]:
            assert (feat["n_prompts_total"], feat["n_tokens_in_prompt"], feat["dataset"]) == (
                len(TEXTS), 64, str(texts))
    assert str(np_dir / "batch-1.json") in stdout


@pytest.mark.parametrize("extra, message", [
    (("--vector", "missing.safetensors"), "steering vector file not found"),
    (("--texts", "no-such-file.txt"), "not a file and not a registry key"),
    (("--sweep", "SWEEP_BAD"), "not valid JSON"),
    (("--patching", "PATCH_BAD"), "different lengths"),
    (("--n-latents", "0"), "--n-latents"),
    (("--neuronpedia-set", "bad set"), "--neuronpedia-set: Neuronpedia export: sae_set: 'bad set'"),
    (("--neuronpedia-features-per-batch", "0"), "--neuronpedia-features-per-batch"),
    (("--neuronpedia", "SWEEP_BAD"), "--neuronpedia: Neuronpedia export folder"),
])
def test_dashboard_command_bad_input(monkeypatch, capsys, tiny_model, setup, tmp_path, extra, message):
    sae, _, firing = setup
    vec_path = _sae_vector(tiny_model, sae, {firing[0]: 1.0}).save(tmp_path / "v")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "patch.json").write_text(json.dumps({"values": [[1, 2], [3]]}))
    subst = {"SWEEP_BAD": str(tmp_path / "bad.json"), "PATCH_BAD": str(tmp_path / "patch.json")}
    args = {"--vector": str(vec_path), "--output-dir": str(tmp_path / "o")}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        args[flag] = subst.get(value, value)
    argv = ["dashboard", *[x for kv in args.items() for x in kv]]
    code, _, err = _main(monkeypatch, capsys, tiny_model, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_real_model_dashboard(model, tmp_path):
    """SAS vector (Morocco culture pairs) on the shipped SAE, 50 held-out corpus texts, rendered in Chromium."""
    from interp_steer.data import culture_preferences
    from interp_steer.interpret.latents import corpus_texts
    from interp_steer.methods.sas import compute_sas
    from interp_steer.saes import load_sae

    from .conftest import shared_data

    shared_data("corpus", "mixed-text.jsonl.gz")
    sae = load_sae(model=model)
    vec = compute_sas(model, sae, culture_preferences(countries="morocco", split="train")[:16], top_k=32)
    texts = corpus_texts(None, n=50, tokenizer=model.tokenizer, max_chars=400)
    t0 = time.perf_counter()
    dash = build_dashboard(model, sae, vec, texts, n_latents=4, strengths=[4.0], n_snippets=5, max_length=64,
                           sweep={"0": 0.0, "4": 0.25})
    elapsed = time.perf_counter() - t0
    html_path, _ = dash.write(tmp_path / "real")
    print(f"\nreal-model dashboard (4 latents, 50 texts, 1 strength): {elapsed:.1f} s; "
          f"{html_path.stat().st_size / 1e6:.1f} MB")
    feats = dash.features["features"]
    assert len(feats) == 4 and dash.features["sae"]["hook"] == "blocks.15.hook_resid_post"
    assert dash.features["corpus"]["n_tokens"] > 50 * 10
    assert any(f["n_firing"] > 0 for f in feats)
    for f in feats:
        assert f["vectorValue"] == pytest.approx(float(vec.vector()[f["index"]]))
        if f["n_firing"]:
            assert f["activations"] and f["activations"][0]["maxValue"] == pytest.approx(f["maxActApprox"])
    dom, pixels = render_in_chromium(html_path, tmp_path)
    assert dom.count('class="plot-container plotly"') == _n_figures(dash.features, True, False)
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50
