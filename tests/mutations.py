"""Deliberately broken implementations, to check that the suite notices (``scripts/mutation_check.py``).

Set ``INTERP_STEER_MUTATION`` to one of :data:`MUTATIONS` and load this module as a pytest plugin
(``pytest -p tests.mutations``); subprocesses started by tests call :func:`apply_from_env` themselves.

* ``random-vector`` – every learned vector (BiPO, YaPO, CAA, SAS) is replaced by a random direction of the
  same norm (same support size for SAE-latent vectors);
* ``sas-reversed`` – SAS contrasts rejected minus chosen;
* ``sas-policy`` – SAS reads the last prompt token instead of the response tokens;
* ``ignore-checkpoint`` – training never finds its checkpoint (restarts from step 0);
* ``random-sae`` – every SAE loaded by ``load_sae`` gets random weights of the same shapes and scale.
"""

from __future__ import annotations

import os
from typing import Any

import torch

MUTATIONS = ("random-vector", "sas-reversed", "sas-policy", "ignore-checkpoint", "random-sae")


def _randomize(vec: Any) -> Any:
    g = torch.Generator().manual_seed(1234)
    for parts in vec.tensors.values():
        for name, t in list(parts.items()):
            if not torch.is_tensor(t) or t.ndim != 1:
                continue
            r = torch.randn(t.shape, generator=g, dtype=torch.float32)
            nz = int((t != 0).sum())
            if 0 < nz < t.numel():  # keep the support size, move it
                keep = torch.randperm(t.numel(), generator=g)[:nz]
                mask = torch.zeros(t.numel(), dtype=torch.bool)
                mask[keep] = True
                r = torch.where(mask, r, torch.zeros_like(r))
            parts[name] = (r / r.norm().clamp_min(1e-12) * t.float().norm()).to(t.dtype)
    return vec


_APPLIED: dict[str, Any] = {}


def apply(name: str) -> None:
    if _APPLIED:  # already mutated: only point new imports at the mutated functions
        for attr, fn in _APPLIED.items():
            _rebind(attr, fn)
        return
    if name not in MUTATIONS:
        raise ValueError(f"unknown mutation {name!r}; expected one of {MUTATIONS}")
    import interp_steer.methods.caa as caa
    import interp_steer.methods.preference as pref
    import interp_steer.methods.sas as sas
    import interp_steer.saes as saes

    if name == "random-vector":
        train, compute_caa, compute_sas = pref.train_vector, caa.compute_caa, sas.compute_sas

        def train_vector(*a: Any, **k: Any) -> Any:
            res = train(*a, **k)
            _randomize(res.vector)
            return res

        def caa_(*a: Any, **k: Any) -> Any:
            return {layer: _randomize(v) for layer, v in compute_caa(*a, **k).items()}

        def sas_(*a: Any, **k: Any) -> Any:
            return _randomize(compute_sas(*a, **k))

        pref.train_vector, caa.compute_caa, sas.compute_sas = train_vector, caa_, sas_
        _APPLIED.update(train_vector=train_vector, compute_caa=caa_, compute_sas=sas_)
    elif name in ("sas-reversed", "sas-policy"):
        original = sas.compute_sas

        def compute_sas(model: Any, sae: Any, examples: Any, **k: Any) -> Any:
            from dataclasses import replace

            if name == "sas-reversed":
                examples = [replace(e, chosen=e.rejected, rejected=e.chosen) for e in examples]
            else:
                k["token_policy"] = "last_prompt"
            return original(model, sae, examples, **k)

        sas.compute_sas = compute_sas
        _APPLIED["compute_sas"] = compute_sas
    elif name == "ignore-checkpoint":
        _APPLIED["_load_checkpoint"] = lambda path: None
    elif name == "random-sae":
        load = saes.load_sae

        def load_sae(*a: Any, **k: Any) -> Any:
            sae = load(*a, **k)
            g = torch.Generator().manual_seed(99)
            with torch.no_grad():
                for p in sae.parameters():
                    scale = p.float().std().clamp_min(1e-3) if p.numel() > 1 else torch.tensor(1.0)
                    p.copy_((torch.randn(p.shape, generator=g) * scale + p.float().mean()).to(p.dtype))
            return sae

        _APPLIED["load_sae"] = load_sae
    for attr, fn in _APPLIED.items():
        _rebind(attr, fn)


def _rebind(attr: str, fn: Any) -> None:
    """Point every already-imported ``from … import attr`` at the mutated function."""
    import sys

    for mod in list(sys.modules.values()):
        name = getattr(mod, "__name__", "") or ""
        if name.startswith(("interp_steer", "tests")) and name != __name__ and attr in getattr(mod, "__dict__", {}):
            setattr(mod, attr, fn)


def apply_from_env() -> None:
    name = os.environ.get("INTERP_STEER_MUTATION")
    if name:
        apply(name)


def pytest_configure(config: Any) -> None:
    apply_from_env()


def pytest_collection_finish(session: Any) -> None:
    apply_from_env()  # rebind the names the test modules imported at collection
