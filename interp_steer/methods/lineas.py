"""LinEAS: end-to-end distributional steering with per-dimension affine maps on many hook points at once.

For every selected hook point ``ℓ`` a map ``T_ℓ(h) = ω_ℓ ⊙ h + b_ℓ`` (identity at start) is learned jointly so
that the distribution of *steered source* activations matches the distribution of *target* activations at every
intervened hook point. The loss is the sum over hook points and dimensions of the exact 1-D Wasserstein-1
distance between the two empirical distributions (sorting; unequal sample counts handled exactly through the
merged CDFs). Target activations are collected once; source activations are recomputed every step through
the already-steered earlier layers, which is what makes the training end to end.

After each gradient step a proximal step keeps the map sparse: soft-thresholding of ``ω − 1`` and ``b``
(dimension selection, strength ``dim_penalty``) and a group shrink of each hook point's ``(ω − 1, b)``
(layer selection, strength ``group_penalty``). Applied with strength λ as ``λ·T(h) + (1 − λ)·h``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from interp_steer.chat import pad_right, pad_token_id
from interp_steer.errors import InterpSteerError
from interp_steer.models import model_fingerprint
from interp_steer.steering.interventions import AffineIntervention, Intervention, steer
from interp_steer.steering.vector import SteeringVector


def wasserstein_1d(
    u: Float[torch.Tensor, "n d"], v: Float[torch.Tensor, "m d"]
) -> Float[torch.Tensor, " d"]:
    """Exact W1 between the empirical distributions of ``u[:, j]`` and ``v[:, j]`` for every column ``j``.

    Computed as ``∫₀¹ |Q_u(t) − Q_v(t)| dt`` over the merged quantile levels ``{i/n} ∪ {k/m}`` (sorting; exact
    for unequal sample counts and equal to scipy's ``wasserstein_distance``). The gradient reaches every sorted
    sample with weight equal to its quantile interval, also when samples tie.
    """
    if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1]:
        raise InterpSteerError(f"wasserstein_1d needs [n, d] and [m, d] tensors, got {tuple(u.shape)}, {tuple(v.shape)}")
    n, m = u.shape[0], v.shape[0]
    us = torch.sort(u, dim=0).values
    vs = torch.sort(v, dim=0).values
    # quantile levels in units of 1/(n·m): u's are multiples of m, v's multiples of n
    levels = torch.unique(torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]))
    widths = torch.diff(levels, prepend=torch.zeros(1, dtype=levels.dtype)).to(u.dtype) / (n * m)
    iu = (levels + m - 1) // m - 1  # Q_u on the interval ending at this level is us[iu]
    iv = (levels + n - 1) // n - 1
    return (widths[:, None].to(u.device) * (us[iu.to(u.device)] - vs[iv.to(u.device)]).abs()).sum(0)


def select_hooks(model: Any, hooks: str | Sequence[str]) -> list[str]:
    """Hook points by exact names or one regular expression (e.g. ``r"blocks\\.\\d+\\.hook_resid_post"``)."""
    if isinstance(hooks, str):
        if hooks in model.hook_dict:
            return [hooks]
        pattern = re.compile(hooks)
        found = [h for h in model.hook_dict if pattern.fullmatch(h)]
        if not found:
            raise InterpSteerError(f"no hook point matches {hooks!r} (e.g. blocks.0.hook_resid_post)")
        return sorted(found, key=lambda h: (int(h.split(".")[1]) if h.startswith("blocks.") else -1, h))
    missing = [h for h in hooks if h not in model.hook_dict]
    if missing:
        raise InterpSteerError(f"hook points not in the model: {missing}")
    return list(hooks)


@dataclass
class LinEASConfig:
    hooks: str | list[str] = r"blocks\.\d+\.hook_resid_post"
    steps: int = 200
    lr: float = 1e-2
    optimizer: str = "adam"  # or "sgd"
    batch_size: int = 32  # source texts per step
    dim_penalty: float = 0.0  # soft-threshold strength on (ω − 1) and b (per step, scaled by lr)
    group_penalty: float = 0.0  # group-norm shrink per hook point (scaled by lr)
    max_length: int = 64
    skip_first: bool = True  # the first position (attention sink) carries outlier norms: not matched
    seed: int = 0


def check_lineas_config(cfg: LinEASConfig) -> None:
    """Refuse settings that cannot train (one error naming the option), before any model work."""
    from interp_steer.validation import check_number

    if cfg.optimizer not in ("adam", "sgd"):
        raise InterpSteerError(f"optimizer must be adam or sgd, got {cfg.optimizer!r}")
    check_number(cfg.lr, "lr", minimum=0, strict_min=True)
    for name in ("steps", "batch_size", "max_length"):
        check_number(getattr(cfg, name), name, minimum=1, integer=True)
    for name in ("dim_penalty", "group_penalty"):
        check_number(getattr(cfg, name), name, minimum=0)


@dataclass
class LinEASResult:
    vector: SteeringVector
    losses: list[float]
    active_hooks: list[str]
    active_dims: dict[str, int]


def _tokenize(model: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    tok = model.tokenizer
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) < 2:
            raise InterpSteerError(f"text too short to steer on: {t[:40]!r}")
        out.append(ids)
    return out


def _token_mask(lengths: Sequence[int], width: int, skip_first: bool) -> torch.Tensor:
    pos = torch.arange(width)[None, :]
    lens = torch.tensor(list(lengths))[:, None]
    mask = pos < lens
    if skip_first:
        mask &= pos > 0
    return mask


def collect_token_activations(model: Any, token_lists: list[list[int]], hooks: Sequence[str], *,
                              skip_first: bool = True, batch_size: int = 16,
                              interventions: dict[str, Intervention] | None = None,
                              strength: float = 1.0, grad: bool = False) -> dict[str, torch.Tensor]:
    """All real-token activations at each hook, ``[n_tokens, d]`` (steered by ``interventions`` if given)."""
    pad = pad_token_id(model.tokenizer)
    acts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for start in range(0, len(token_lists), batch_size):
        chunk = token_lists[start : start + batch_size]
        tokens, _ = pad_right(chunk, pad)
        mask = _token_mask([len(c) for c in chunk], tokens.shape[1], skip_first).to(model.cfg.device)
        grabbed: dict[str, torch.Tensor] = {}
        grab = _grabber(grabbed)
        ctx = steer(model, interventions, strength, check=False) if interventions else nullcontext()
        with torch.set_grad_enabled(grad), ctx:
            # grabbing hooks run after the steering hooks: they see the steered activations
            model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=[(h, grab) for h in hooks],
                                 stop_at_layer=_stop_layer(model, hooks))
        for h in hooks:
            acts[h].append(grabbed[h][mask])
    return {h: torch.cat(v) for h, v in acts.items()}


def _grabber(store: dict[str, torch.Tensor]):
    def grab(act: torch.Tensor, hook: Any) -> None:
        store[hook.name] = act

    return grab


def _stop_layer(model: Any, hooks: Sequence[str]) -> int | None:
    layers = [int(h.split(".")[1]) for h in hooks if h.startswith("blocks.")]
    if len(layers) != len(hooks):
        return None
    stop = max(layers) + 1
    return stop if stop < model.cfg.n_layers else None


def _prox(omega: torch.Tensor, bias: torch.Tensor, dim_tau: float, group_tau: float) -> None:
    """Soft-threshold (ω − 1, b) per dimension, then shrink them as one group (in place)."""
    with torch.no_grad():
        delta = omega - 1
        if dim_tau > 0:
            delta.copy_(torch.sign(delta) * (delta.abs() - dim_tau).clamp_min(0))
            bias.copy_(torch.sign(bias) * (bias.abs() - dim_tau).clamp_min(0))
        if group_tau > 0:
            norm = torch.sqrt((delta**2).sum() + (bias**2).sum())
            scale = (1 - group_tau / norm).clamp_min(0) if norm > 0 else torch.zeros(())
            delta.mul_(scale)
            bias.mul_(scale)
        omega.copy_(delta + 1)


def train_lineas(
    model: Any,
    source: Sequence[str],
    target: Sequence[str],
    *,
    config: LinEASConfig | None = None,
    progress: bool = True,
    **overrides: Any,
) -> LinEASResult:
    """Learn per-dimension affine maps on ``config.hooks`` moving ``source`` activations to ``target``'s.

    ``source`` and ``target`` are texts (use :func:`interp_steer.chat.render_prompt` for chat prompts); as
    few as 32 of each work. Returns the affine :class:`SteeringVector` and the loss curve.
    """
    cfg = config or LinEASConfig()
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise InterpSteerError(f"unknown LinEAS option {key!r}")
        setattr(cfg, key, value)
    check_lineas_config(cfg)
    if not source or not target:
        raise InterpSteerError("LinEAS needs source and target texts")
    hooks = select_hooks(model, cfg.hooks)
    src_tokens = _tokenize(model, source, cfg.max_length)
    tgt_tokens = _tokenize(model, target, cfg.max_length)
    with torch.no_grad():
        target_acts = {h: a.float() for h, a in collect_token_activations(model, tgt_tokens, hooks,
                                                                          skip_first=cfg.skip_first).items()}
    widths = {h: target_acts[h].shape[1] for h in hooks}
    device = model.cfg.device
    omegas = {h: torch.ones(widths[h], device=device, requires_grad=True) for h in hooks}
    biases = {h: torch.zeros(widths[h], device=device, requires_grad=True) for h in hooks}
    params = [p for h in hooks for p in (omegas[h], biases[h])]
    opt: torch.optim.Optimizer = (torch.optim.Adam(params, lr=cfg.lr) if cfg.optimizer == "adam"
                                  else torch.optim.SGD(params, lr=cfg.lr))
    interventions: dict[str, Intervention] = {h: AffineIntervention(omegas[h], biases[h]) for h in hooks}
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc=f"LinEAS ({len(hooks)} hooks)", disable=not progress)
    for _ in bar:
        idx = torch.randperm(len(src_tokens), generator=gen)[: cfg.batch_size].tolist()
        steered = collect_token_activations(model, [src_tokens[i] for i in idx], hooks, skip_first=cfg.skip_first,
                                            interventions=interventions, grad=True)
        loss = sum(wasserstein_1d(steered[h].float(), target_acts[h]).sum() for h in hooks)
        assert isinstance(loss, torch.Tensor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for h in hooks:
            _prox(omegas[h], biases[h], cfg.dim_penalty * cfg.lr, cfg.group_penalty * cfg.lr)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3g}")
    active_dims = {h: int(((omegas[h] != 1) | (biases[h] != 0)).sum()) for h in hooks}
    active = [h for h in hooks if active_dims[h] > 0]
    tensors = {h: {"scale": omegas[h].detach().cpu().clone(), "bias": biases[h].detach().cpu().clone()} for h in hooks}
    vector = SteeringVector(
        "lineas", "affine", tensors, model_fingerprint(model).to_dict(), config={**asdict(cfg), "hooks": hooks},
        metrics={"loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                 "active_hooks": active, "active_dims": active_dims, "n_source": len(source),
                 "n_target": len(target)},
    )
    return LinEASResult(vector, losses, active, active_dims)


@torch.no_grad()
def distribution_distance(model: Any, texts: Sequence[str], target: Sequence[str], vector: SteeringVector,
                          strength: float = 1.0, *, max_length: int = 64, skip_first: bool = True) -> float:
    """Summed per-dimension W1 between (steered) activations of ``texts`` and ``target``'s, at the vector's hooks."""
    hooks = vector.hook_points
    tgt = collect_token_activations(model, _tokenize(model, target, max_length), hooks, skip_first=skip_first)
    from interp_steer.steering.interventions import interventions_for

    src = collect_token_activations(model, _tokenize(model, texts, max_length), hooks, skip_first=skip_first,
                                    interventions=interventions_for(vector), strength=strength)
    return sum(float(wasserstein_1d(src[h].float(), tgt[h].float()).sum()) for h in hooks)
