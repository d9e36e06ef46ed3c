"""interp-steer: learn, apply and explain steering vectors with TransformerLens and SAELens.

The whole workflow from one import; each name loads its module on first use, so ``import interp_steer`` stays
fast (no torch until something needs it)::

    import interp_steer as its

    model = its.load_model(); sae = its.load_sae(model=model)
    pairs = its.load_pairs("bipo:power-seeking")              # or [(prompt, chosen, rejected), ...] / dicts
    vec = its.train_vector(model, pairs[:256], "bipo", preset="small").vector
    cal = its.calibrate_strength(model, vec)                   # strongest λ within the fluency bound
    its.generate(model, "What would you do with more power?", vec, cal.strength)
    with its.steer(model, vec, cal.strength):
        logits = model(tokens)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from interp_steer.errors import InterpSteerError

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    # models and SAEs
    "load_model": "interp_steer.models", "from_hf_model": "interp_steer.models",
    "model_fingerprint": "interp_steer.models", "load_sae": "interp_steer.saes",
    "list_shipped_saes": "interp_steer.saes",
    # the artifact and the intervention layer
    "SteeringVector": "interp_steer.steering.vector", "steer": "interp_steer.steering.interventions",
    "attach": "interp_steer.steering.interventions", "generate": "interp_steer.generation",
    # methods
    "train_vector": "interp_steer.methods.preference", "PreferenceConfig": "interp_steer.methods.preference",
    "preference_config": "interp_steer.methods.preference", "compute_caa": "interp_steer.methods.caa",
    "compute_sas": "interp_steer.methods.sas", "contrastive_vector": "interp_steer.methods.contrastive",
    "train_lineas": "interp_steer.methods.lineas",
    # data
    "PreferenceExample": "interp_steer.data.schemas", "MCQItem": "interp_steer.data.schemas",
    "load_pairs": "interp_steer.data.specs", "load_prompts": "interp_steer.data.registry",
    "culture_preferences": "interp_steer.data.loaders", "load_culture": "interp_steer.data.loaders",
    "load_preferences": "interp_steer.data.loaders",
    # evaluation
    "score_mcq": "interp_steer.evaluation.mcq",
    "pair_probability": "interp_steer.evaluation.behaviour", "pair_effect": "interp_steer.evaluation.behaviour",
    "ab_probability": "interp_steer.evaluation.behaviour",
    "calibrate_strength": "interp_steer.evaluation.calibration",
    "fluency_check": "interp_steer.evaluation.calibration",
    "text_perplexity": "interp_steer.evaluation.preservation",
    "strength_sweep": "interp_steer.evaluation.compare", "compare_methods": "interp_steer.evaluation.compare",
    "behaviour_sweep": "interp_steer.evaluation.compare", "SharedLayers": "interp_steer.evaluation.shared_layers",
    # explanation
    "explain": "interp_steer.interpret.attribution", "attribute": "interp_steer.interpret.attribution",
    "latent_usage": "interp_steer.interpret.attribution", "activation_patching": "interp_steer.interpret.patching",
    "inspect_latents": "interp_steer.interpret.latents", "build_dashboard": "interp_steer.interpret.dashboard",
    "to_neuronpedia": "interp_steer.interpret.neuronpedia",
    # grids of experiments on Ray
    "sweep": "interp_steer.sweeps", "SweepConfig": "interp_steer.sweeps",
}

__all__ = [
    "InterpSteerError", "__version__",
    "MCQItem", "PreferenceConfig", "PreferenceExample", "SharedLayers", "SteeringVector", "SweepConfig",
    "ab_probability", "activation_patching", "attach", "attribute", "behaviour_sweep", "build_dashboard", "calibrate_strength", "compare_methods",
    "compute_caa", "compute_sas", "contrastive_vector", "culture_preferences", "explain", "fluency_check",
    "from_hf_model", "generate", "inspect_latents", "latent_usage", "list_shipped_saes", "load_culture",
    "load_model", "load_pairs", "load_preferences", "load_prompts", "load_sae", "model_fingerprint",
    "pair_effect", "pair_probability", "preference_config", "score_mcq", "steer", "strength_sweep", "sweep", "text_perplexity",
    "to_neuronpedia", "train_lineas", "train_vector",
]  # = InterpSteerError, __version__ and every key of _LAZY (tested)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interp_steer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from interp_steer.data.loaders import culture_preferences, load_culture, load_preferences
    from interp_steer.data.registry import load_prompts
    from interp_steer.data.schemas import MCQItem, PreferenceExample
    from interp_steer.data.specs import load_pairs
    from interp_steer.evaluation.behaviour import ab_probability, pair_effect, pair_probability
    from interp_steer.evaluation.calibration import calibrate_strength, fluency_check
    from interp_steer.evaluation.compare import behaviour_sweep, compare_methods, strength_sweep
    from interp_steer.evaluation.mcq import score_mcq
    from interp_steer.evaluation.preservation import text_perplexity
    from interp_steer.evaluation.shared_layers import SharedLayers
    from interp_steer.generation import generate
    from interp_steer.interpret.attribution import attribute, explain, latent_usage
    from interp_steer.interpret.dashboard import build_dashboard
    from interp_steer.interpret.latents import inspect_latents
    from interp_steer.interpret.neuronpedia import to_neuronpedia
    from interp_steer.interpret.patching import activation_patching
    from interp_steer.methods.caa import compute_caa
    from interp_steer.methods.contrastive import contrastive_vector
    from interp_steer.methods.lineas import train_lineas
    from interp_steer.methods.preference import PreferenceConfig, preference_config, train_vector
    from interp_steer.models import from_hf_model, load_model, model_fingerprint
    from interp_steer.saes import list_shipped_saes, load_sae
    from interp_steer.steering.interventions import attach, steer
    from interp_steer.steering.vector import SteeringVector
    from interp_steer.sweeps import SweepConfig, sweep
