"""A thin layer over sae-lens' training runner for TransformerLens models and local text corpora.

CPU-sane defaults: the activation-norm estimate uses ``norm_estimate_batches`` store batches (sae-lens'
default is ~4M tokens of forward passes), the buffer holds several training batches, and the corpus is
pre-tokenized here into fixed-length rows (documents chat-templated where they are dialogues, joined by the
tokenizer's end-of-sequence token, each row starting with the BOS/``<|im_start|>`` sink token). Special
tokens are excluded from training positions: the attention-sink position carries outlier norms that no
small SAE should spend capacity on; steering keeps them exact through the SAE error term anyway.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from interp_steer.errors import InterpSteerError
from interp_steer.validation import dumps as _strict_dumps

Architecture = Literal["topk", "jumprelu", "standard"]


@dataclass
class SAETrainingConfig:
    """Settings for :func:`train_sae` (recorded in the SAE's metadata)."""

    hook: str = "blocks.15.hook_resid_post"
    d_sae: int = 4096
    architecture: Architecture = "topk"
    k: int = 32  # topk only
    l1_coefficient: float = 5.0  # standard only
    l0_coefficient: float = 1.0  # jumprelu only
    training_tokens: int = 3_000_000
    context_size: int = 256
    train_batch_size_tokens: int = 2048
    lr: float = 4e-4
    lr_warm_up_steps: int = 100
    lr_decay_fraction: float = 0.2
    # training steps without firing after which a latent counts as dead and receives the TopK auxiliary
    # (AuxK) loss; sae-lens' default of 1000 steps never triggers in a ~3000-step CPU run's first third
    dead_feature_window: int = 200
    store_batch_size_prompts: int = 8
    n_batches_in_buffer: int = 16
    norm_estimate_batches: int = 20
    heldout_fraction: float = 0.05
    seed: int = 0
    n_checkpoints: int = 0
    resume_from_checkpoint: str | None = None  # a sae-lens checkpoint folder of an interrupted run
    # fine-tune a trained SAE instead of starting from a random one: a sae-lens SAE folder, a shipped SAE's name or
    # width (same architecture, width, k and hook as this config); training runs with fresh optimiser state
    init_from: str | None = None
    # with init_from (TopK): before training, give every latent that never fires on ``resample_tokens`` training
    # tokens a new direction (interp_steer.saes.resample)
    resample_dead: bool = False
    resample_tokens: int = 65_536
    aux_loss_coefficient: float = 1.0  # topk only: weight of sae-lens' AuxK dead-latent loss
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, names: Mapping[str, str] | None = None) -> None:
        """One :class:`InterpSteerError` naming the first option that is out of range (before any work).

        ``names`` maps field names to the labels the caller's users know them by (the CLI passes its flags, e.g.
        ``{"train_batch_size_tokens": "--batch-tokens"}``); unmapped fields are named as they are."""
        from interp_steer.validation import check_number

        def name(f: str) -> str:
            return (names or {}).get(f, f)

        if self.architecture not in ("topk", "jumprelu", "standard"):
            raise InterpSteerError(f"unknown SAE architecture {self.architecture!r} ({name('architecture')}); "
                                   "expected topk, jumprelu or standard")
        if not isinstance(self.hook, str) or not self.hook:
            raise InterpSteerError(f"{name('hook')} must be a hook name, got {self.hook!r}")
        for f, low, strict, integer in (
                ("d_sae", 1, False, True), ("k", 1, False, True), ("training_tokens", 1, False, True),
                ("context_size", 2, False, True), ("train_batch_size_tokens", 1, False, True),
                ("lr", 0, True, False), ("l1_coefficient", 0, False, False), ("l0_coefficient", 0, False, False),
                ("lr_warm_up_steps", 0, False, True), ("dead_feature_window", 1, False, True),
                ("store_batch_size_prompts", 1, False, True), ("n_batches_in_buffer", 1, False, True),
                ("norm_estimate_batches", 1, False, True), ("seed", 0, False, True), ("n_checkpoints", 0, False, True),
                ("resample_tokens", 1, False, True), ("aux_loss_coefficient", 0, False, False)):
            check_number(getattr(self, f), name(f), minimum=low, strict_min=strict, integer=integer)
        check_number(self.lr_decay_fraction, name("lr_decay_fraction"), minimum=0, maximum=1)
        check_number(self.heldout_fraction, name("heldout_fraction"), minimum=0, maximum=0.5, strict_min=True)
        if self.architecture == "topk" and self.k > self.d_sae:
            raise InterpSteerError(f"{name('k')} {self.k} is larger than {name('d_sae')} {self.d_sae}")
        from sae_lens.constants import DTYPE_MAP

        if self.dtype not in DTYPE_MAP:
            raise InterpSteerError(f"{name('dtype')} must be one of {', '.join(DTYPE_MAP)}, got {self.dtype!r}")


def tokenize_corpus(
    texts: list[str], tokenizer: Any, context_size: int, *, max_tokens: int | None = None, progress: bool = True
) -> torch.Tensor:
    """Concatenate documents (EOS-separated) into rows of ``context_size`` tokens, each starting with BOS."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    if bos is None:
        raise InterpSteerError("tokenizer has neither a BOS nor an EOS token to separate documents")
    body = context_size - 1
    rows: list[list[int]] = []
    buffer: list[int] = []
    for text in tqdm(texts, desc="tokenizing corpus", disable=not progress, leave=False):
        buffer.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        buffer.append(eos)
        while len(buffer) >= body:
            rows.append([bos] + buffer[:body])
            buffer = buffer[body:]
        if max_tokens is not None and len(rows) * context_size >= max_tokens:
            break
    if not rows:
        raise InterpSteerError(f"corpus holds fewer than {context_size} tokens")
    return torch.tensor(rows, dtype=torch.long)


def _sae_config(cfg: SAETrainingConfig, d_in: int) -> Any:
    from sae_lens import JumpReLUTrainingSAEConfig, StandardTrainingSAEConfig, TopKTrainingSAEConfig

    common = dict(d_in=d_in, d_sae=cfg.d_sae, dtype=cfg.dtype, normalize_activations="expected_average_only_in")
    if cfg.architecture == "topk":
        return TopKTrainingSAEConfig(k=cfg.k, aux_loss_coefficient=cfg.aux_loss_coefficient, **common)
    if cfg.architecture == "jumprelu":
        return JumpReLUTrainingSAEConfig(l0_coefficient=cfg.l0_coefficient, **common)
    if cfg.architecture == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common)
    raise InterpSteerError(f"unknown SAE architecture {cfg.architecture!r}; expected topk, jumprelu or standard")


def _hook_width(model: Any, hook: str) -> int:
    if hook not in model.hook_dict:
        raise InterpSteerError(f"hook {hook!r} does not exist in model {model.cfg.model_name}")
    tokens = torch.zeros((1, 2), dtype=torch.long, device=model.cfg.device)
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    return int(cache[hook].shape[-1])


def train_sae(
    model: Any,
    corpus: list[str],
    *,
    config: SAETrainingConfig | None = None,
    output_dir: str | Path | None = None,
    command: str | None = None,
    corpus_info: dict[str, Any] | None = None,
    progress: bool = True,
    **overrides: Any,
):
    """Train an SAE on ``model``'s activations at ``config.hook`` over the documents in ``corpus``.

    ``overrides`` replace fields of ``config`` (e.g. ``d_sae=1024, training_tokens=20_000``). Returns the
    trained inference SAE (sae-lens ``SAE``); with ``output_dir`` also writes ``cfg.json``,
    ``sae_weights.safetensors`` and ``interp_steer.json`` (training config, command, corpus info).
    """
    import datasets
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig

    cfg = config or SAETrainingConfig()
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise InterpSteerError(f"unknown SAE training option {key!r}")
        setattr(cfg, key, value)
    cfg.validate()
    if not corpus:
        raise InterpSteerError("empty corpus")
    d_in = _hook_width(model, cfg.hook)
    init_sae = _load_init_sae(cfg, d_in, str(model.cfg.device)) if cfg.init_from else None
    if cfg.resample_dead and init_sae is None:
        raise InterpSteerError("resample_dead needs init_from (the trained SAE whose dead latents to resample)")
    n_steps = max(1, cfg.training_tokens // cfg.train_batch_size_tokens)
    # sae-lens' mixing buffer holds n_batches_in_buffer × context_size activations and must hold at least one
    # training batch; keep two so that its 50 % mixing has something to mix
    buffer_tokens = cfg.n_batches_in_buffer * cfg.context_size
    if buffer_tokens < 2 * cfg.train_batch_size_tokens:
        cfg.n_batches_in_buffer = -(-2 * cfg.train_batch_size_tokens // cfg.context_size)
        buffer_tokens = cfg.n_batches_in_buffer * cfg.context_size
    torch.manual_seed(cfg.seed)
    norm_tokens = cfg.norm_estimate_batches * cfg.store_batch_size_prompts * cfg.context_size
    needed = cfg.training_tokens + norm_tokens + buffer_tokens * cfg.store_batch_size_prompts
    rows = tokenize_corpus(corpus, model.tokenizer, cfg.context_size, max_tokens=needed, progress=progress)
    if rows.numel() < cfg.training_tokens:
        # not enough text: sae-lens cycles through the dataset again (reported in metadata)
        cfg.extra["corpus_epochs"] = round(cfg.training_tokens / rows.numel(), 2)
    if init_sae is not None:
        _prepare_init_sae(model, init_sae, cfg, rows, progress)
    dataset = datasets.Dataset.from_dict({"tokens": rows.tolist()})
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=_sae_config(cfg, d_in),
        model_name=str(model.cfg.model_name),
        model_class_name="HookedSAETransformer",
        hook_name=cfg.hook,
        dataset_path="",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=cfg.context_size,
        prepend_bos=False,
        exclude_special_tokens=True,
        training_tokens=cfg.training_tokens,
        train_batch_size_tokens=cfg.train_batch_size_tokens,
        store_batch_size_prompts=cfg.store_batch_size_prompts,
        n_batches_in_buffer=cfg.n_batches_in_buffer,
        n_batches_for_norm_estimate=cfg.norm_estimate_batches,
        lr=cfg.lr,
        lr_warm_up_steps=min(cfg.lr_warm_up_steps, n_steps // 10),
        lr_decay_steps=int(n_steps * cfg.lr_decay_fraction),
        lr_scheduler_name="constant",
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(cfg.dead_feature_window, 2 * cfg.dead_feature_window),
        device=str(model.cfg.device),
        seed=cfg.seed,
        dtype=cfg.dtype,
        n_checkpoints=cfg.n_checkpoints,
        resume_from_checkpoint=cfg.resume_from_checkpoint,
        checkpoint_path=str(Path(output_dir) / "checkpoints") if output_dir else "checkpoints",
        output_path=None,
        logger=LoggingConfig(log_to_wandb=False),
        verbose=progress,
        n_eval_batches=2,
    )
    runner = LanguageModelSAETrainingRunner(runner_cfg, override_dataset=dataset, override_model=model,
                                            override_sae=init_sae)
    training_sae = runner.run()
    if output_dir is None:
        import tempfile

        tmp = tempfile.mkdtemp(prefix="interp_steer_sae_")
        out = Path(tmp)
    else:
        out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_training_result(runner, training_sae, out, cfg, command=command, corpus_info=corpus_info,
                         n_rows=int(rows.shape[0]))
    from interp_steer.saes import load_sae

    return load_sae(path=out, model=model)


def _load_init_sae(cfg: SAETrainingConfig, d_in: int, device: str) -> Any:
    """The trained SAE named by ``cfg.init_from`` as a sae-lens training SAE, checked against ``cfg``."""
    from sae_lens import TrainingSAE

    from interp_steer.saes import resolve_sae_folder, sae_content_hash

    if cfg.resume_from_checkpoint:
        raise InterpSteerError("init_from and resume_from_checkpoint exclude each other: resuming restores a run's "
                               "own SAE and optimiser state")
    folder = resolve_sae_folder(cfg.init_from)
    if not (folder / "cfg.json").is_file() or not (folder / "sae_weights.safetensors").is_file():
        raise InterpSteerError(f"init_from: {folder} is not a sae-lens SAE folder (cfg.json + sae_weights.safetensors)")
    sae = TrainingSAE.load_from_disk(str(folder), device=device, dtype=cfg.dtype)
    got = {"architecture": sae.cfg.architecture(), "d_sae": int(sae.cfg.d_sae), "d_in": int(sae.cfg.d_in),
           "hook": sae.cfg.metadata.hook_name}
    want = {"architecture": cfg.architecture, "d_sae": cfg.d_sae, "d_in": d_in, "hook": cfg.hook}
    if cfg.architecture == "topk":
        got["k"], want["k"] = int(sae.cfg.k), cfg.k
    wrong = [f"{key} {got[key]!r} (the run asks for {want[key]!r})" for key in want if got[key] != want[key]]
    if wrong:
        raise InterpSteerError(f"init_from {cfg.init_from}: the SAE does not match this run: {', '.join(wrong)}")
    if sae.cfg.normalize_activations != "none":
        raise InterpSteerError(f"init_from {cfg.init_from}: expected an exported SAE reading raw activations; "
                               f"this one normalises them ({sae.cfg.normalize_activations!r})")
    if cfg.architecture == "topk":
        sae.cfg.aux_loss_coefficient = cfg.aux_loss_coefficient
    cfg.extra["init_from"] = {"path": str(cfg.init_from), "content_hash": sae_content_hash(sae)}
    return sae


@torch.no_grad()
def sample_activations(model: Any, rows: torch.Tensor, hook: str, *, batch_size: int = 8,
                       progress: bool = True) -> torch.Tensor:
    """Activations at ``hook`` over token ``rows``, special-token positions left out (as sae-lens trains)."""
    from interp_steer.saes.quality import _special_ids

    parts = hook.split(".")
    stop = int(parts[1]) + 1 if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit() else None
    special = _special_ids(model.tokenizer).to(rows.device)
    out = []
    for start in tqdm(range(0, rows.shape[0], batch_size), desc="sample activations", disable=not progress,
                      leave=False):
        tokens = rows[start : start + batch_size].to(model.cfg.device)
        _, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=stop)
        out.append(cache[hook][~torch.isin(tokens, special.to(tokens.device))].float())
    return torch.cat(out)


_SCALE_SAMPLE_TOKENS = 8192  # enough for the mean activation norm (sae-lens estimates it from fewer)


def _prepare_init_sae(model: Any, sae: Any, cfg: SAETrainingConfig, rows: torch.Tensor, progress: bool) -> None:
    """Resample ``sae``'s dead latents (optional), then move it into sae-lens' normalised training space.

    An exported SAE has the activation-norm scaling factor s folded into its weights. sae-lens trains on
    ``x · s'`` with its own estimate s' and folds s' back at the end, so the weights are unfolded here with
    ``s = sqrt(d_in) / mean ‖x‖`` measured on the resampling sample (s'/s differs from 1 by sampling noise only).
    Without resampling, only the scale is needed and the sample is capped at ``_SCALE_SAMPLE_TOKENS``.
    """
    from interp_steer.saes.resample import resample_dead_latents

    tokens = cfg.resample_tokens if cfg.resample_dead else min(cfg.resample_tokens, _SCALE_SAMPLE_TOKENS)
    n_rows = max(1, -(-tokens // cfg.context_size))
    acts = sample_activations(model, rows[:n_rows], cfg.hook, batch_size=cfg.store_batch_size_prompts,
                              progress=progress)
    if cfg.resample_dead:
        report = resample_dead_latents(sae, acts.to(sae.W_enc.dtype), seed=cfg.seed)
        cfg.extra["resample"] = report.to_dict()
    scale = float(int(sae.cfg.d_in) ** 0.5 / acts.norm(dim=-1).mean())
    sae.fold_activation_norm_scaling_factor(1.0 / scale)
    sae.cfg.normalize_activations = "expected_average_only_in"
    cfg.extra["init_scaling_factor"] = scale


def save_training_result(
    runner: Any, training_sae: Any, out: Path, cfg: SAETrainingConfig, *, command: str | None,
    corpus_info: dict[str, Any] | None, n_rows: int,
) -> None:
    runner.save_final_sae(training_sae, str(out))
    meta = {
        "format": "interp_steer.sae/1",
        "training_config": asdict(cfg),
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "corpus": corpus_info or {},
        "tokenized_rows": n_rows,
        "model": str(runner.cfg.model_name),
    }
    (out / "interp_steer.json").write_text(_strict_dumps(meta, indent=2))


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path, *, command: str | None = None,
                      note: str | None = None) -> Path:
    """Turn a sae-lens training checkpoint (of an interrupted or ongoing run) into an inference SAE folder.

    The activation-norm scaling factor recorded in the checkpoint is folded into the weights, as sae-lens does
    at the end of training. ``interp_steer.json`` records the run's settings, the tokens actually trained on and
    ``note``.
    """
    from sae_lens import TrainingSAE

    ckpt = Path(checkpoint)
    cfg_file, scaler_file = ckpt / "cfg.json", ckpt / "activation_scaler.json"
    if not cfg_file.is_file() or not (ckpt / "sae_weights.safetensors").is_file():
        raise InterpSteerError(f"{ckpt} is not a sae-lens training checkpoint (cfg.json + sae_weights.safetensors)")
    cfg_dict = json.loads(cfg_file.read_text())
    architecture = cfg_dict["metadata"].get("training_architecture", cfg_dict.get("architecture"))
    cfg_dict["architecture"] = architecture
    cfg_cls = TrainingSAE.get_sae_config_class_for_architecture(architecture)
    sae_cfg = cfg_cls.from_dict(cfg_dict)
    sae = TrainingSAE.get_sae_class_for_architecture(architecture)(sae_cfg)
    sae.load_weights_from_checkpoint(ckpt)
    scaling = json.loads(scaler_file.read_text()).get("scaling_factor") if scaler_file.is_file() else None
    if scaling is not None:
        sae.fold_activation_norm_scaling_factor(float(scaling))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sae.save_inference_model(str(out))
    runner = json.loads((ckpt / "runner_cfg.json").read_text()) if (ckpt / "runner_cfg.json").is_file() else {}
    meta = {
        "format": "interp_steer.sae/1",
        "exported_from_checkpoint": ckpt.name,
        "tokens_trained": int(ckpt.name) if ckpt.name.isdigit() else None,
        "planned_training_tokens": runner.get("training_tokens"),
        "runner_config": {k: runner.get(k) for k in ("hook_name", "context_size", "train_batch_size_tokens", "lr",
                                                      "seed", "exclude_special_tokens") if k in runner},
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "note": note,
    }
    (out / "interp_steer.json").write_text(_strict_dumps(meta, indent=2))
    return out
