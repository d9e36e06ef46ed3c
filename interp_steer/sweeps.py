"""Grids of steering experiments on Ray: targets × methods × layers × learning rates × seeds, each cell built,
scored on held-out pairs and written atomically; resumable and fault-tolerant.

A grid (a dict, or a JSON/YAML/TOML file)::

    {"model": null,                                   # load_model() name: null = the embedded default
     "targets": ["bipo:power-seeking", "my_pairs.jsonl"],   # load_pairs specs (datasets or user files)
     "methods": ["caa", {"name": "bipo", "preset": "small", "epochs": 1}, "yapo"],
     "layers": [12, 15], "lrs": [1e-2], "seeds": [0],
     "strengths": [1, 2, 4],                          # or "calibrate": the fluency-bounded λ per cell
     "train_pairs": 256, "val_pairs": 32, "test_pairs": 64, "save_vectors": false,
     "fluency_texts": null}                           # perplexity texts (default: held-out corpus documents)

Each cell trains (or computes) one vector on the first ``train_pairs`` of the target's training pairs (a seeded
shuffle; ``val_pairs`` after them choose the trained vector and, with ``"calibrate"``, λ), then reports on
``test_pairs`` items it never saw (the target's test split; files without splits: the pairs after train + val):
the free-text matching-answer probability unsteered and at ±λ, and the perplexity ratio at ±λ on held-out text.

Engine: ``ray.init()`` starts a local Ray instance on this machine's cores (``address=`` / ``RAY_ADDRESS`` joins
a cluster). Workers are Ray actors that load the model (and the SAE) once and run many cells; Ray restarts a
killed actor and retries its cell (``max_restarts`` / ``max_task_retries``). A cell that raises is reported as
failed, not fatal. Finished cells are skipped on a rerun. One report: ``sweep.json``, ``sweep.csv``,
``sweep.md`` and an offline plotly ``sweep.html``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interp_steer.errors import InterpSteerError
from interp_steer.validation import check_number
from interp_steer.validation import dumps as _strict_dumps

TRAINED = ("bipo", "yapo")
METHODS = ("caa", "sas", "bipo", "yapo")


@dataclass
class SweepConfig:
    """A declarative grid (see the module docstring)."""

    targets: list[str]
    methods: list[dict[str, Any]]
    layers: list[int] = field(default_factory=lambda: [15])
    lrs: list[float] = field(default_factory=lambda: [1e-2])
    seeds: list[int] = field(default_factory=lambda: [0])
    strengths: list[float] | str = field(default_factory=lambda: [1.0, 2.0, 4.0])
    model: str | None = None
    sae: str | None = None
    train_pairs: int = 256
    val_pairs: int = 32
    test_pairs: int = 64
    ppl_texts: int = 8
    ppl_tokens: int = 96
    fluency_texts: list[str] | None = None  # default: ppl_texts held-out corpus documents
    max_ratio: float = 1.2
    save_vectors: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InterpSteerError(f"unknown grid key(s) {unknown}; expected some of {sorted(known)}")
        if "targets" not in data or "methods" not in data:
            raise InterpSteerError("a grid needs 'targets' and 'methods'")
        kw = dict(data)
        kw["methods"] = [m if isinstance(m, dict) else {"name": m} for m in kw["methods"]]
        cfg = cls(**kw)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise InterpSteerError("'targets' must be a non-empty list of dataset specs or files")
        for m in self.methods:
            if m.get("name") not in METHODS:
                raise InterpSteerError(f"unknown method {m.get('name')!r} in the grid; expected one of {METHODS}")
        for name in ("layers", "lrs", "seeds"):
            if not getattr(self, name):
                raise InterpSteerError(f"'{name}' must not be empty")
        for layer in self.layers:
            check_number(layer, "layer", minimum=0, integer=True)
        for lr in self.lrs:
            check_number(lr, "lr", minimum=0, strict_min=True)
        if isinstance(self.strengths, str):
            if self.strengths != "calibrate":
                raise InterpSteerError("'strengths' is a list of numbers or \"calibrate\"")
        else:
            if not self.strengths:
                raise InterpSteerError("'strengths' must not be empty")
            for s in self.strengths:
                check_number(s, "strength", minimum=0, strict_min=True)
        for name in ("train_pairs", "val_pairs", "test_pairs", "ppl_texts", "ppl_tokens"):
            check_number(getattr(self, name), name, minimum=1, integer=True)
        check_number(self.max_ratio, "max_ratio", minimum=1, strict_min=True)

    def cells(self) -> list[dict[str, Any]]:
        """One dict per cell; learning rates only multiply the trained methods."""
        out = []
        for target, method, layer, seed in itertools.product(self.targets, self.methods, self.layers, self.seeds):
            for lr in (self.lrs if method["name"] in TRAINED else [None]):
                cell = {"target": target, "method": method, "layer": layer, "seed": seed, "lr": lr}
                cell["id"] = cell_id(cell)
                out.append(cell)
        return out


def cell_id(cell: Mapping[str, Any]) -> str:
    """A readable, stable file name for a cell (its parameters hashed to disambiguate)."""
    key = json.dumps({k: cell[k] for k in ("target", "method", "layer", "seed", "lr")}, sort_keys=True)
    name = Path(cell["target"]).stem if os.sep in cell["target"] or "." in cell["target"] else cell["target"]
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{name}_{cell['method']['name']}_L{cell['layer']}")
    return f"{slug}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def load_grid(source: str | os.PathLike[str] | Mapping[str, Any]) -> SweepConfig:
    """A :class:`SweepConfig` from a dict or a ``.json`` / ``.yaml`` / ``.yml`` / ``.toml`` file."""
    if isinstance(source, Mapping):
        return SweepConfig.from_dict(source)
    from interp_steer.validation import read_text

    path = Path(source)
    text = read_text(path, "grid file")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            raise InterpSteerError(f"{path}: a grid is .json, .yaml/.yml or .toml")
    except InterpSteerError:
        raise
    except Exception as exc:  # json/yaml/toml syntax errors
        raise InterpSteerError(f"{path}: cannot parse the grid ({exc})") from None
    if not isinstance(data, dict):
        raise InterpSteerError(f"{path}: a grid is a mapping of keys to values")
    return SweepConfig.from_dict(data)


# ------------------------------------------------------------------------------------------------- one cell


def _split(cfg: SweepConfig, target: str, seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    import random

    from interp_steer.data.specs import has_splits, load_pairs

    form = "text" if target.startswith(("bipo:", "mwe:")) else "mcq"  # behaviour sets: free-text answers
    pairs = load_pairs(target, split="train", form=form)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_tr, n_val = cfg.train_pairs, cfg.val_pairs
    train = [pairs[i] for i in order[:n_tr]]
    val = [pairs[i] for i in order[n_tr : n_tr + n_val]]
    if has_splits(target):
        test = load_pairs(target, split="test", form=form)[: cfg.test_pairs]
    else:
        test = [pairs[i] for i in order[n_tr + n_val : n_tr + n_val + cfg.test_pairs]]
    if not train or not val or not test:
        raise InterpSteerError(f"{target}: {len(pairs)} pairs do not fill train ({n_tr}), validation ({n_val}) and "
                               f"test ({cfg.test_pairs})")
    return train, val, test


def run_cell(model: Any, sae: Any | None, cfg: SweepConfig, cell: Mapping[str, Any],
             output_dir: Path) -> dict[str, Any]:
    """Build, calibrate (or sweep λ) and score one cell; the row written to ``cells/<id>.json``."""
    from interp_steer.evaluation.behaviour import pair_effect, pair_probability
    from interp_steer.evaluation.calibration import calibrate_strength, calibration_texts
    from interp_steer.evaluation.preservation import text_perplexity
    from interp_steer.evaluation.shared_layers import SharedLayers

    t0 = time.perf_counter()
    method = dict(cell["method"])
    name = method.pop("name")
    train, val, test = _split(cfg, cell["target"], cell["seed"])
    layer = int(cell["layer"])
    if name == "caa":
        from interp_steer.methods.caa import compute_caa

        vector = compute_caa(model, train, layers=layer, **method)[layer]
    elif name == "sas":
        from interp_steer.methods.sas import compute_sas

        if sae is None:
            raise InterpSteerError("SAS needs an SAE (grid key 'sae', or the shipped one for the embedded model)")
        vector = compute_sas(model, sae, train, **method)
    else:
        from interp_steer.methods.preference import train_vector

        options = {"lr": cell["lr"], "seed": cell["seed"], **method}
        if name == "bipo":
            options["layer"] = layer
        elif sae is None:
            raise InterpSteerError("YaPO needs an SAE (grid key 'sae', or the shipped one for the embedded model)")
        vector = train_vector(model, train, name, sae=sae if name == "yapo" else None, eval_data=val,
                              progress=False, **options).vector
    vsae = sae if vector.kind == "sae" else None
    shared = SharedLayers.for_vectors(model, [vector])  # blocks below the vector's layer run once per batch
    texts = list(cfg.fluency_texts) if cfg.fluency_texts else calibration_texts(model.tokenizer, cfg.ppl_texts)
    base_ppl = text_perplexity(model, texts, max_tokens=cfg.ppl_tokens, shared=shared).perplexity
    p0 = pair_probability(model, test, shared=shared)["p_matching"]
    if cfg.strengths == "calibrate":
        effect = pair_effect(model, val, vector, sae=vsae, shared=shared)
        cal = calibrate_strength(model, vector, effect, sae=vsae, texts=texts, max_ratio=cfg.max_ratio,
                                 max_tokens=cfg.ppl_tokens, perplexity_unsteered=base_ppl, shared=shared)
        strengths = [cal.strength] if cal.strength is not None else []
    else:
        strengths = [float(s) for s in cfg.strengths]
    rows = []
    for lam in strengths:
        r: dict[str, Any] = {"strength": lam}
        for sign, tag in ((1, "plus"), (-1, "minus")):
            r[f"p_{tag}"] = pair_probability(model, test, vector, sign * lam, sae=vsae, shared=shared)["p_matching"]
            ppl = text_perplexity(model, texts, vector, sign * lam, sae=vsae, max_tokens=cfg.ppl_tokens,
                                  shared=shared).perplexity
            r[f"ppl_ratio_{tag}"] = ppl / base_ppl
        r["dp_plus"], r["dp_minus"] = r["p_plus"] - p0, r["p_minus"] - p0
        r["within_bound"] = max(r["ppl_ratio_plus"], r["ppl_ratio_minus"]) <= cfg.max_ratio
        rows.append(r)
    if cfg.save_vectors:
        vector.save(output_dir / "vectors" / cell["id"])
    return {"id": cell["id"], "target": cell["target"], "method": name, "options": method, "layer": layer,
            "lr": cell["lr"], "seed": cell["seed"], "status": "done", "n_train": len(train), "n_val": len(val),
            "n_test": len(test), "p_unsteered": p0, "rows": rows, "seconds": round(time.perf_counter() - t0, 2),
            "worker_pid": os.getpid()}


class CellRunner:
    """What each Ray actor holds: the model and SAE loaded once, and the grid; runs many cells."""

    def __init__(self, cfg_dict: dict[str, Any], output_dir: str, threads: int = 1) -> None:
        import torch

        from interp_steer.models import load_model

        torch.set_num_threads(threads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.cfg = SweepConfig.from_dict(cfg_dict)
        self.output_dir = Path(output_dir)
        workers = self.output_dir / "workers"  # one file per worker process that served the sweep (restarts too)
        workers.mkdir(parents=True, exist_ok=True)
        (workers / str(os.getpid())).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.model = load_model(self.cfg.model)
        self.sae = None
        needs_sae = any(m["name"] in ("yapo", "sas") for m in self.cfg.methods)
        if needs_sae or self.cfg.sae:
            from interp_steer.saes import load_sae

            self.sae = load_sae(path=self.cfg.sae, model=self.model)

    def pid(self) -> int:
        return os.getpid()

    def run(self, cell: dict[str, Any]) -> dict[str, Any]:
        path = self.output_dir / "cells" / f"{cell['id']}.json"
        if path.exists():  # a retried cell that finished before the kill
            return json.loads(path.read_text())
        try:
            row = run_cell(self.model, self.sae, self.cfg, cell, self.output_dir)
        except Exception as exc:  # one failing cell is reported, not fatal
            row = {"id": cell["id"], "target": cell["target"], "method": cell["method"]["name"],
                   "layer": cell["layer"], "lr": cell["lr"], "seed": cell["seed"], "status": "failed",
                   "error": f"{type(exc).__name__}: {exc}", "worker_pid": os.getpid()}
        from interp_steer.io import write_text_atomic

        write_text_atomic(path, _strict_dumps(row, indent=2))
        return row


def sweep(grid: SweepConfig | Mapping[str, Any] | str | os.PathLike[str], output_dir: str | os.PathLike[str], *,
          workers: int | None = None, address: str | None = None, cpus_per_worker: float = 1.0,
          gpus_per_worker: float = 0.0, max_retries: int = 3, progress: bool = True,
          on_cell: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every cell of ``grid`` not yet in ``output_dir`` on Ray workers; return the report (see module doc).

    ``workers`` defaults to the cores Ray sees divided by ``cpus_per_worker``. ``on_cell(row)`` is called in the
    driver as each cell finishes (progress hooks, tests).
    """
    cfg = grid if isinstance(grid, SweepConfig) else load_grid(grid)
    out = Path(output_dir)
    cells = cfg.cells()
    done_dir = out / "cells"
    todo = [c for c in cells if not (done_dir / f"{c['id']}.json").exists()]
    ran = 0
    if todo:
        ran = _run_on_ray(cfg, todo, out, workers=workers, address=address, cpus_per_worker=cpus_per_worker,
                          gpus_per_worker=gpus_per_worker, max_retries=max_retries, progress=progress, on_cell=on_cell)
    report = write_report(cfg, cells, out)
    report["ran"] = ran
    report["skipped"] = len(cells) - len(todo)
    return report


def _run_on_ray(cfg: SweepConfig, todo: list[dict[str, Any]], out: Path, *, workers: int | None,
                address: str | None, cpus_per_worker: float, gpus_per_worker: float, max_retries: int,
                progress: bool, on_cell: Callable[[dict[str, Any]], None] | None) -> int:
    import ray
    from tqdm.auto import tqdm

    (out / "cells").mkdir(parents=True, exist_ok=True)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        n = workers or max(1, int(ray.available_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))
        n = max(1, min(n, len(todo)))
        actor_cls: Any = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_retries,
                                    max_task_retries=max_retries)(CellRunner)
        actors: list[Any] = [actor_cls.remote(asdict(cfg), str(out), max(1, int(cpus_per_worker))) for _ in range(n)]
        pending: dict[Any, dict[str, Any]] = {}
        queue = list(todo)
        idle = list(actors)
        bar = tqdm(total=len(todo), desc="sweep cells", disable=not progress)
        ran = 0
        while queue or pending:
            while queue and idle:
                actor = idle.pop()
                cell = queue.pop(0)
                pending[actor.run.remote(cell)] = {"cell": cell, "actor": actor}
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            job = pending.pop(ref)
            try:
                row = ray.get(ref)
            except Exception as exc:  # the actor died more often than Ray retries: report the cell as failed
                row = {"id": job["cell"]["id"], "target": job["cell"]["target"],
                       "method": job["cell"]["method"]["name"], "layer": job["cell"]["layer"],
                       "lr": job["cell"]["lr"], "seed": job["cell"]["seed"], "status": "failed",
                       "error": f"worker lost: {type(exc).__name__}: {exc}"[:500]}
                from interp_steer.io import write_text_atomic

                write_text_atomic(out / "cells" / f"{row['id']}.json", _strict_dumps(row, indent=2))
            idle.append(job["actor"])
            ran += 1
            bar.update(1)
            if on_cell is not None:
                on_cell(row)
        bar.close()
        for actor in actors:
            ray.kill(actor)
        return ran
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------------- report


def _flat(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for r in rows:
        base = {k: r.get(k) for k in ("id", "target", "method", "layer", "lr", "seed", "status", "p_unsteered",
                                      "seconds", "error")}
        for s in r.get("rows") or [{}]:
            flat.append({**base, **{k: s.get(k) for k in ("strength", "dp_plus", "dp_minus", "ppl_ratio_plus",
                                                          "ppl_ratio_minus", "within_bound")}})
    return flat


def write_report(cfg: SweepConfig, cells: Sequence[dict[str, Any]], out: Path) -> dict[str, Any]:
    """``sweep.json`` (every cell), ``sweep.csv`` and ``sweep.md`` (one line per cell × strength) and an offline
    plotly ``sweep.html`` (Δp at +λ vs λ per method, one panel per target and layer)."""
    from interp_steer.io import write_figure_atomic, write_text_atomic

    rows = []
    for c in cells:
        path = out / "cells" / f"{c['id']}.json"
        if path.exists():
            rows.append(json.loads(path.read_text()))
    flat = _flat(rows)
    report = {"grid": asdict(cfg), "n_cells": len(cells), "n_done": sum(r.get("status") == "done" for r in rows),
              "n_failed": sum(r.get("status") == "failed" for r in rows), "cells": rows}
    write_text_atomic(out / "sweep.json", _strict_dumps(report, indent=2))
    if flat:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
        write_text_atomic(out / "sweep.csv", buf.getvalue())
    lines = ["| target | method | layer | lr | seed | status | λ | Δp +λ | Δp −λ | ppl× +λ | ppl× −λ |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x: Any, signed: bool = False) -> str:
        return "–" if x is None else (f"{x:+.3f}" if signed else f"{x:.3g}")

    for r in flat:
        lines.append(f"| {r['target']} | {r['method']} | {r['layer']} | {f(r['lr'])} | {r['seed']} | {r['status']} | "
                     f"{f(r['strength'])} | {f(r['dp_plus'], True)} | {f(r['dp_minus'], True)} | "
                     f"{f(r['ppl_ratio_plus'])} | {f(r['ppl_ratio_minus'])} |")
    write_text_atomic(out / "sweep.md", "\n".join(lines) + "\n")
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = sorted({(r["target"], r["layer"]) for r in flat if r["status"] == "done"})
    if panels:
        fig = make_subplots(rows=len(panels), cols=1, subplot_titles=[f"{t} · layer {layer}" for t, layer in panels])
        for i, (t, layer) in enumerate(panels, 1):
            for m in sorted({r["method"] for r in flat if r["target"] == t and r["layer"] == layer}):
                pts = [r for r in flat if r["target"] == t and r["layer"] == layer and r["method"] == m
                       and r["strength"] is not None]
                fig.add_trace(go.Scatter(x=[p["strength"] for p in pts], y=[p["dp_plus"] for p in pts],
                                         mode="markers+lines", name=f"{m} (L{layer})"), row=i, col=1)
        fig.update_layout(height=320 * len(panels), title="Δp(matching answer) at +λ on held-out items")
        write_figure_atomic(fig, out / "sweep.html")
    return report


__all__ = ["CellRunner", "SweepConfig", "cell_id", "load_grid", "run_cell", "sweep", "write_report"]
