"""Neuronpedia export: the dashboard's latents as the ``batch-N.json`` files SAEDashboard's NeuronpediaRunner
writes, which Neuronpedia's converter turns into its bulk-import layout.

Schema (from SAEDashboard ``sae_dashboard/neuronpedia/neuronpedia_dashboard.py``, the ``to_dict`` of
``NeuronpediaDashboardBatch`` / ``NeuronpediaDashboardFeature`` / ``NeuronpediaDashboardActivation``; the
reader is ``sae_dashboard/neuronpedia/neuronpedia_export.py`` and Neuronpedia's
``utils/neuronpedia-utils/neuronpedia_utils/convert-saedashboard-to-neuronpedia-export.py``)::

    {"model_id": str, "layer": int, "sae_set": str, "sae_id_suffix": str | null,
     "features": [
       {"feature_index": int,
        "neuron_alignment_indices": [int], "neuron_alignment_values": [float], "neuron_alignment_l1": [float],
        "correlated_neurons_indices": [int], "correlated_neurons_l1": [float],
        "correlated_neurons_pearson": [float], "correlated_features_indices": [int],
        "correlated_features_l1": [float], "correlated_features_pearson": [float],
        "neg_str": [str], "neg_values": [float], "pos_str": [str], "pos_values": [float],
        "frac_nonzero": float,
        "freq_hist_data_bar_values": [float], "freq_hist_data_bar_heights": [int],
        "logits_hist_data_bar_heights": [int], "logits_hist_data_bar_values": [float],
        "n_prompts_total": int, "n_tokens_in_prompt": int, "dataset": str,
        "decoder_weights_dist": [float],
        "activations": [{"bin_min": number, "bin_max": number, "bin_contains": number,
                         "tokens": [str], "values": [float], "qualifying_token_index": int}],
        "vector": [float]}]}

What comes from the dashboard (:func:`interp_steer.interpret.dashboard.build_features`): ``feature_index``
(the latent), the logit lens (``pos_*`` / ``neg_*``), ``frac_nonzero`` (density), the histogram of nonzero
activations (bin centres and counts), the corpus size (``n_prompts_total`` texts of at most
``n_tokens_in_prompt`` tokens, ``dataset``) and the top-activating snippets as one "TOP ACTIVATIONS" group:
``bin_min = bin_contains = -1`` and ``bin_max`` = the latent's maximum activation, as SAEDashboard records
that group; ``qualifying_token_index`` is the max-activating token of the snippet. What the dashboard does
not compute is left as SAEDashboard leaves it when absent: the neuron-alignment and correlation tables, the
logit histogram, ``decoder_weights_dist`` and ``vector`` are ``[]``; the optional DFA keys are omitted;
``sae_id_suffix`` is ``null`` unless given. Numeric lists are rounded to 5 decimals as in SAEDashboard (and
``bin_max``, which SAEDashboard reads from a 3-decimal title; ``frac_nonzero`` is kept as is). Features are
sorted by index and split into files of at most ``features_per_batch``. Only the batch files are written:
the runner's ``skipped_indexes.json`` would mark every latent not exported as dead, and the converter takes
the release/creator metadata (and ``n_prompts_total``, ``dataset``) on its own command line.

>>> to_neuronpedia(dashboard, "np-out", sae_set="smollm2-res-sas")   # np-out/batch-0.json, ...
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp_steer.errors import InterpSteerError
from interp_steer.io import write_text_atomic
from interp_steer.validation import check_output_dir

DECIMALS = 5  # SAEDashboard's FeatureProcessor.round_list
FEATURES_PER_BATCH = 128  # SAEDashboard's NeuronpediaRunnerConfig.n_features_at_a_time
EMPTY_FEATURE_KEYS = (  # what SAEDashboard leaves empty without feature tables / logit histogram / vectors
    "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson",
    "correlated_features_indices", "correlated_features_l1", "correlated_features_pearson",
    "logits_hist_data_bar_heights", "logits_hist_data_bar_values", "decoder_weights_dist", "vector",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BATCH_FILE = re.compile(r"batch-\d+\.json")


# ------------------------------------------------------------------------------------------ checks
def _fail(where: str, message: str) -> InterpSteerError:
    return InterpSteerError(f"Neuronpedia export: {where}: {message}")


def _number(value: Any, where: str, decimals: int | None = DECIMALS) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, f"expected a finite number, got {value!r}")
    return float(value) if decimals is None else round(float(value), decimals)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(where, f"expected a non-negative integer, got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, f"expected a list, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(s, str) for s in items):
        raise _fail(where, "expected a list of strings")
    return list(items)


def _numbers(value: Any, where: str) -> list[float]:
    return [_number(x, f"{where}[{i}]") for i, x in enumerate(_list(value, where))]


def _same_length(a: list[Any], b: list[Any], where: str, names: str) -> None:
    if len(a) != len(b):
        raise _fail(where, f"{names} have different lengths ({len(a)} and {len(b)})")


def _name(value: Any, what: str, *, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value) or "__" in value:
        raise _fail(what, f"{value!r} is not a usable Neuronpedia name (letters, digits, '.', '_', '-'; "
                          "starting with a letter or digit; no '__', which separates the SAE-id suffix)")
    return value


def check_options(*, model_id: Any = None, layer: Any = None, sae_set: Any = None, sae_id_suffix: Any = None,
                  features_per_batch: Any = FEATURES_PER_BATCH) -> None:
    """Refuse bad export options before any work (``None`` = derive it from the dashboard later)."""
    if model_id is not None:
        _name(model_id, "model_id")
    if sae_set is not None:
        _name(sae_set, "sae_set")
    _name(sae_id_suffix, "sae_id_suffix", allow_none=True)
    if layer is not None:
        _count(layer, "layer")
    if isinstance(features_per_batch, bool) or not isinstance(features_per_batch, int) or features_per_batch < 1:
        raise _fail("features_per_batch", f"expected an integer ≥ 1, got {features_per_batch!r}")


def _features_dict(source: Any) -> dict[str, Any]:
    from interp_steer.interpret.dashboard import FORMAT, Dashboard

    if isinstance(source, Dashboard):
        source = source.features
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise _fail("input", f"features file not found: {path}")
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _fail("input", f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(source, dict) or source.get("format") != FORMAT:
        got = source.get("format") if isinstance(source, dict) else type(source).__name__
        raise _fail("input", f"expected a dashboard (build_dashboard), its features dict or a features.json "
                             f"with format {FORMAT!r}; got {got!r}")
    return source


def _activation(act: Any, bin_max: float, where: str) -> dict[str, Any]:
    if not isinstance(act, dict):
        raise _fail(where, "expected an object")
    tokens = _strings(act.get("tokens"), f"{where}.tokens")
    values = _numbers(act.get("values"), f"{where}.values")
    _same_length(tokens, values, where, "tokens and values")
    if not tokens:
        raise _fail(where, "a snippet needs at least one token")
    index = _count(act.get("maxValueTokenIndex"), f"{where}.maxValueTokenIndex")
    if index >= len(tokens):
        raise _fail(where, f"maxValueTokenIndex {index} is outside the snippet's {len(tokens)} tokens")
    return {"bin_min": -1, "bin_max": bin_max, "bin_contains": -1, "tokens": tokens, "values": values,
            "qualifying_token_index": index}


def _feature(feat: Any, corpus: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(feat, dict):
        raise _fail(where, "expected an object")
    index = _count(feat.get("index"), f"{where}.index")
    where = f"{where} (latent {index})"
    lens: dict[str, list[Any]] = {key: _strings(feat.get(key), f"{where}.{key}") for key in ("neg_str", "pos_str")}
    lens.update({key: _numbers(feat.get(key), f"{where}.{key}") for key in ("neg_values", "pos_values")})
    for sign in ("pos", "neg"):
        _same_length(lens[f"{sign}_str"], lens[f"{sign}_values"], where, f"{sign}_str and {sign}_values")
    frac = _number(feat.get("frac_nonzero"), f"{where}.frac_nonzero", decimals=None)  # SAEDashboard: unrounded
    if not 0.0 <= frac <= 1.0:
        raise _fail(where, f"frac_nonzero {frac} is not a fraction in [0, 1]")
    bar_values = _numbers(feat.get("freq_hist_data_bar_values"), f"{where}.freq_hist_data_bar_values")
    heights = _list(feat.get("freq_hist_data_bar_heights"), f"{where}.freq_hist_data_bar_heights")
    heights = [_count(h, f"{where}.freq_hist_data_bar_heights[{i}]") for i, h in enumerate(heights)]
    _same_length(bar_values, heights, where, "freq_hist_data_bar_values and freq_hist_data_bar_heights")
    bin_max = _number(feat.get("maxActApprox"), f"{where}.maxActApprox")
    activations = [_activation(a, bin_max, f"{where}.activations[{i}]")
                   for i, a in enumerate(_list(feat.get("activations"), f"{where}.activations"))]
    return {
        "feature_index": index,
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "correlated_features_indices": [], "correlated_features_l1": [], "correlated_features_pearson": [],
        "neg_str": lens["neg_str"], "neg_values": lens["neg_values"],
        "pos_str": lens["pos_str"], "pos_values": lens["pos_values"],
        "frac_nonzero": frac,
        "freq_hist_data_bar_values": bar_values, "freq_hist_data_bar_heights": heights,
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "n_prompts_total": corpus["n_prompts_total"], "n_tokens_in_prompt": corpus["n_tokens_in_prompt"],
        "dataset": corpus["dataset"],
        "decoder_weights_dist": [],
        "activations": activations,
        "vector": [],
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "sae"


# -------------------------------------------------------------------------------------------- build
def neuronpedia_batches(
    source: Any,
    *,
    model_id: str | None = None,
    layer: int | None = None,
    sae_set: str | None = None,
    sae_id_suffix: str | None = None,
    dataset: str | None = None,
    features_per_batch: int = FEATURES_PER_BATCH,
) -> list[dict[str, Any]]:
    """The batch objects (schema in the module docstring) for a dashboard, its features dict or a
    ``features.json`` path.

    ``model_id`` defaults to the dashboard's model name, ``layer`` to the SAE hook's block, ``sae_set`` (the
    Neuronpedia source set, e.g. ``res-jb``) to a slug of the SAE id, ``dataset`` to the corpus source.
    """
    check_options(model_id=model_id, layer=layer, sae_set=sae_set, sae_id_suffix=sae_id_suffix,
                  features_per_batch=features_per_batch)
    data = _features_dict(source)
    sae: dict[str, Any] = data["sae"] if isinstance(data.get("sae"), dict) else {}
    corpus: dict[str, Any] = data["corpus"] if isinstance(data.get("corpus"), dict) else {}
    model_id = _name(model_id if model_id is not None else data.get("model"),
                     "model_id (pass model_id= / --neuronpedia-model-id)")
    layer = layer if layer is not None else sae.get("layer")
    if layer is None:
        raise _fail("layer", f"the SAE hook {sae.get('hook')!r} names no block (blocks.N.…); "
                             "pass layer= (--neuronpedia-layer)")
    layer = _count(layer, "layer")
    sae_set = sae_set if sae_set is not None else _slug(str(sae.get("id") or "sae"))
    sae_set = _name(sae_set, "sae_set")
    dataset = dataset if dataset is not None else corpus.get("source")
    per_feature = {
        "n_prompts_total": _count(corpus.get("n_texts"), "corpus.n_texts"),
        "n_tokens_in_prompt": _count(corpus.get("max_length"), "corpus.max_length"),
        "dataset": "" if dataset is None else str(dataset),
    }
    features = [_feature(f, per_feature, f"features[{i}]")
                for i, f in enumerate(_list(data.get("features"), "features"))]
    if not features:
        raise _fail("features", "nothing to export: the dashboard has no latents (its vector uses none)")
    indices = [f["feature_index"] for f in features]
    if len(set(indices)) != len(indices):
        raise _fail("features", f"latent indices repeat: {sorted(i for i in set(indices) if indices.count(i) > 1)}")
    features.sort(key=lambda f: f["feature_index"])
    return [{"model_id": model_id, "layer": layer, "sae_set": sae_set, "sae_id_suffix": sae_id_suffix,
             "features": features[start:start + features_per_batch]}
            for start in range(0, len(features), features_per_batch)]


# -------------------------------------------------------------------------------------------- write
def _existing_batches(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if _BATCH_FILE.fullmatch(p.name)) if out.is_dir() else []


def check_output(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """``out_dir`` can hold the export: not a file, and (unless ``overwrite``) no ``batch-N.json`` yet."""
    out = check_output_dir(out_dir, "Neuronpedia export folder")
    existing = _existing_batches(out)
    if existing and not overwrite:
        raise _fail(str(out), f"already holds {len(existing)} batch file(s) ({existing[0].name}, …) and the "
                              "importer reads every batch-*.json there: choose an empty folder or pass overwrite=True")
    return out


def write_batches(batches: Sequence[dict[str, Any]], out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``out_dir/batch-0.json`` … (compact strict JSON, each atomically) and, with ``overwrite``,
    remove batch files left from an earlier, larger export so the folder holds exactly this one."""
    if not batches:
        raise _fail("batches", "nothing to write")
    out = check_output(out_dir, overwrite=overwrite)
    try:  # everything is serialised before anything is written
        texts = [json.dumps(batch, allow_nan=False) for batch in batches]
    except (TypeError, ValueError) as exc:
        raise _fail("batches", f"not strict JSON: {exc}") from exc
    paths = [write_text_atomic(out / f"batch-{n}.json", text) for n, text in enumerate(texts)]
    for stale in set(_existing_batches(out)) - set(paths):
        stale.unlink()
    return paths


def to_neuronpedia(source: Any, out_dir: str | Path, *, overwrite: bool = False, **options: Any) -> list[Path]:
    """:func:`neuronpedia_batches` (``options`` go there) written by :func:`write_batches`."""
    check_output(out_dir, overwrite=overwrite)
    return write_batches(neuronpedia_batches(source, **options), out_dir, overwrite=overwrite)


__all__ = ["DECIMALS", "EMPTY_FEATURE_KEYS", "FEATURES_PER_BATCH", "check_options", "check_output",
           "neuronpedia_batches", "to_neuronpedia", "write_batches"]
