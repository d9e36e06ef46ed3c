"""Sweeps that run the layers steering cannot change once.

A vector whose lowest hook is in block ``L`` (``hook_resid_pre``, the attention/MLP outputs, ...) leaves the
embedding and blocks ``0 … L−1`` untouched, and one at ``blocks.L.hook_resid_post`` leaves block ``L`` untouched
too (its value *is* the input of block ``L+1``, ``blocks.{L+1}.hook_resid_pre``). A strength sweep, the fluency
guard's λ grid or a comparison of several methods at one layer therefore only needs the blocks from the
**split** ``S`` upward once per strength and vector; the residual stream entering block ``S`` (and, for
KV-cached passes, the keys and values of blocks ``< S``) is the same every time.

:class:`SharedLayers` memoises that lower part by the content of the batch (tokens, attention mask and the
lower layers' KV-cache state), so a scoring function calls :meth:`SharedLayers.forward` where it called
``model(...)``, and repeated calls over the same batches pay for the lower blocks once. Scores are the same
as the full forward's (same operations on the same inputs; the tests compare them for every position policy
and intervention kind).

>>> shared = SharedLayers.for_vectors(model, [vec])      # split = 16 for blocks.15.hook_resid_post
>>> rows = [pair_probability(model, pairs, vec, lam, shared=shared) for lam in (0, 1, 2, 4, 8)]
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from interp_steer.errors import InterpSteerError
from interp_steer.steering.interventions import Intervention, interventions_for
from interp_steer.steering.vector import SteeringVector

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def first_changed_block(model: Any, hooks: Iterable[str]) -> int:
    """The lowest block whose *input* some hook in ``hooks`` can change (``0``: no sharing is possible)."""
    n_layers = int(model.cfg.n_layers)
    split = n_layers
    for hook in hooks:
        m = _BLOCK.match(hook)
        if m is None:  # embedding, final norm, ...: nothing below it to share
            return 0
        layer, name = int(m.group(1)), m.group(2)
        if name == "hook_resid_post" and layer + 1 < n_layers:
            split = min(split, layer + 1)
        else:
            split = min(split, layer)
    return split


def _digest(*tensors: torch.Tensor | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        c = t.detach().to("cpu").contiguous()
        h.update(f"{c.dtype}{tuple(c.shape)}".encode())
        h.update(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"")
    return h.hexdigest()


@dataclass
class _Lower:
    residual: torch.Tensor
    attention_mask: torch.Tensor | None
    shortformer: torch.Tensor | None
    entries: list[tuple[torch.Tensor, torch.Tensor]] | None  # KV of blocks < split after the pass (unfrozen cache)
    cache_mask: torch.Tensor | None


class SharedLayers:
    """The embedding and blocks ``0 … split−1`` of ``model``, run once per distinct batch.

    ``split``: the first block that runs per strength (:func:`first_changed_block` of the vectors that will use
    it; :meth:`for_vectors` computes it). A vector with a hook below the split cannot use this object (the
    scoring functions then fall back to full forwards, see :meth:`usable_for`). ``max_entries`` bounds the
    memo (oldest batches are dropped first; ``None``: unbounded — the lower residuals of a few hundred
    sequences of a 135M model take tens of MB).
    """

    def __init__(self, model: Any, split: int, *, max_entries: int | None = None):
        n_layers = int(model.cfg.n_layers)
        if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split <= n_layers:
            raise InterpSteerError(f"split must be a block index in 0..{n_layers}, got {split!r}")
        self.model = model
        self.split = split
        self.max_entries = max_entries
        self._memo: dict[str, _Lower] = {}
        self.hits = 0
        self.misses = 0
        # unsteered results callers share (e.g. a sweep's λ = 0 row, the same for every vector): key -> value
        self.unsteered: dict[Any, Any] = {}

    @classmethod
    def for_vectors(cls, model: Any, vectors: Iterable[SteeringVector | None], **kwargs: Any) -> SharedLayers:
        """One object every vector of ``vectors`` can use (the lowest of their splits)."""
        hooks = [h for v in vectors if v is not None for h in v.tensors]
        split = first_changed_block(model, hooks) if hooks else int(model.cfg.n_layers) - 1
        return cls(model, split, **kwargs)

    def usable_for(self, vector: SteeringVector | None) -> bool:
        """Whether ``vector``'s hooks all act at or above the split (unsteered passes always can)."""
        return vector is None or first_changed_block(self.model, vector.tensors) >= self.split

    def interventions(self, vector: SteeringVector, sae: Any | None = None, *,
                      sparse: bool | str = "auto") -> dict[str, Intervention]:
        """``vector``'s interventions keyed by the hook that fires in the shared forward: a
        ``blocks.{split−1}.hook_resid_post`` hook moves to ``blocks.{split}.hook_resid_pre`` (the same tensor;
        block ``split−1`` does not run per strength)."""
        out: dict[str, Intervention] = {}
        for hook, fn in interventions_for(vector, sae, sparse=sparse).items():
            m = _BLOCK.match(hook)
            if m is not None and m.group(2) == "hook_resid_post" and int(m.group(1)) == self.split - 1:
                hook = f"blocks.{self.split}.hook_resid_pre"
            out[hook] = fn
        return out

    def _check_no_hooks_below(self) -> None:
        """A hook below the split would run on the first pass only (its output memoised): refuse it."""
        below = [name for name, point in self.model.hook_dict.items()
                 if (point._forward_hooks or point._forward_pre_hooks) and self._below(name)]
        if below:
            raise InterpSteerError(
                f"hooks are attached below the shared split (block {self.split}): {below[:4]}; their effect "
                "would be computed once and reused. Use SharedLayers.for_vectors with every vector, or no sharing"
            )

    def _below(self, name: str) -> bool:
        m = _BLOCK.match(name)
        if m is None:
            return not name.startswith(("ln_final", "unembed"))
        return int(m.group(1)) < self.split

    def clear(self) -> None:
        self._memo.clear()
        self.unsteered.clear()

    def _key(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None, cache: Any | None) -> str:
        if cache is None:
            return _digest(tokens, attention_mask)
        lower = [t for e in cache.entries[: self.split] for t in (e.past_keys, e.past_values)]
        return _digest(tokens, attention_mask, cache.previous_attention_mask,
                       torch.tensor([int(cache.frozen)]), *lower)

    def lower(self, tokens: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
              past_kv_cache: Any | None = None) -> _Lower:
        """The residual stream entering block ``split`` for this batch (memoised), with the attention mask the
        blocks see; an unfrozen ``past_kv_cache`` is left as the full lower pass would leave it."""
        key = self._key(tokens, attention_mask, past_kv_cache)
        hit = self._memo.get(key)
        cache = past_kv_cache
        if hit is not None:
            self.hits += 1
            if cache is not None and not cache.frozen:
                assert hit.entries is not None and hit.cache_mask is not None
                for entry, (k, v) in zip(cache.entries[: self.split], hit.entries, strict=True):
                    if not entry.frozen:
                        entry.past_keys, entry.past_values = k, v
                cache.previous_attention_mask = hit.cache_mask
            return hit
        self.misses += 1
        model = self.model
        self._check_no_hooks_below()
        with torch.no_grad():
            residual, _, shortformer, mask = model.input_to_embed(tokens, attention_mask=attention_mask,
                                                                  past_kv_cache=cache)
            if self.split > 0:
                residual = model(residual, start_at_layer=0, stop_at_layer=self.split, attention_mask=mask,
                                 past_kv_cache=cache, shortformer_pos_embed=shortformer)
        entries = cache_mask = None
        if cache is not None and not cache.frozen:
            entries = [(e.past_keys, e.past_values) for e in cache.entries[: self.split]]
            cache_mask = cache.previous_attention_mask
        out = _Lower(residual, mask, shortformer, entries, cache_mask)
        if self.max_entries is not None and len(self._memo) >= self.max_entries:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = out
        return out

    def forward(self, tokens: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                past_kv_cache: Any | None = None, stop_at_layer: int | None = None,
                return_type: str | None = "logits") -> Any:
        """``model(tokens, ...)`` with the lower blocks memoised: the blocks from ``split`` up run now (with
        whatever hooks are attached)."""
        low = self.lower(tokens, attention_mask=attention_mask, past_kv_cache=past_kv_cache)
        if stop_at_layer is not None and stop_at_layer <= self.split:
            raise InterpSteerError(f"stop_at_layer={stop_at_layer} is below the shared split {self.split}")
        return self.model(low.residual, start_at_layer=self.split, stop_at_layer=stop_at_layer,
                          attention_mask=low.attention_mask, past_kv_cache=past_kv_cache,
                          shortformer_pos_embed=low.shortformer, return_type=return_type)


def run(model: Any, shared: SharedLayers | None, tokens: torch.Tensor, **kwargs: Any) -> Any:
    """``shared.forward(tokens, ...)`` when sharing, else the plain ``model(tokens, ...)``."""
    if shared is None:
        return model(tokens, **kwargs)
    if shared.model is not model:
        raise InterpSteerError("this SharedLayers object was built for another model")
    return shared.forward(tokens, **kwargs)


def resolve(model: Any, vector: SteeringVector | None, shared: SharedLayers | bool) -> SharedLayers | None:
    """What a sweep's ``shared=`` argument means: the given object, a new one for ``vector`` (``True``) or
    none (``False``)."""
    if isinstance(shared, SharedLayers):
        return shared
    return SharedLayers.for_vectors(model, [vector]) if shared else None


def usable(shared: SharedLayers | None, vector: SteeringVector | None) -> SharedLayers | None:
    """``shared`` when ``vector`` can use it, else ``None`` (a full forward)."""
    return shared if shared is not None and shared.usable_for(vector) else None
