"""Regenerate the notebooks from the cell sources below (``python notebooks/build.py``); outputs are not stored.

The notebooks are executed by ``tests/test_notebooks.py`` (slow, real default model) with nbclient.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).parent

TOUR = [
    ("md", """# interp-steer tour

Load the embedded SmolLM2-135M-Instruct and its shipped SAE, train a **YaPO** (sparse, SAE-latent) and a
**BiPO** (dense) vector on the project's culture set, compare them on held-out questions, then explain the
YaPO vector: which SAE latents it uses, how much each moves the metric (gradient × Δ checked against
ablation), and a self-contained feature dashboard. Kept small (few pairs and steps) so that it runs in a few
minutes on a CPU; raise `STEPS` and `N_PAIRS` for real runs."""),
    ("code", """import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path
import interp_steer as its
from interp_steer.data import culture_preferences, load_culture
from interp_steer.methods.preference import train_vector

COUNTRY, STEPS, N_PAIRS = "morocco", int(os.environ.get("TOUR_STEPS", 24)), 24
OUT = Path(os.environ.get("TOUR_OUT", "runs/notebook-tour"))
model = its.load_model()
sae = its.load_sae(model=model)
print(model.cfg.model_name, "| SAE", sae.cfg.metadata.hook_name, sae.cfg.d_sae, "latents")"""),
    ("md", "## Train YaPO and BiPO on the same pairs, layer and batch"),
    ("code", """pairs = culture_preferences(countries=COUNTRY, split="train", form="mcq")[:N_PAIRS]
test_pairs = culture_preferences(countries=COUNTRY, split="test", form="mcq")
common = dict(eval_data=test_pairs, max_steps=STEPS, epochs=STEPS, batch_size=4, lr=5e-2, progress=False)
yapo = train_vector(model, pairs, "yapo", sae=sae, **common)
bipo = train_vector(model, pairs, "bipo", layer=15, **common)
for name, res in (("yapo", yapo), ("bipo", bipo)):
    ev = res.evals[-1]
    print(f"{name}: loss {res.history[0]['loss']:.3f} -> {res.history[-1]['loss']:.3f}; held-out preference "
          f"accuracy +λ {ev['pref_acc_plus']:.2f}, −λ {ev['pref_acc_minus']:.2f}")"""),
    ("md", "## Compare on held-out culture questions (option log-likelihood, RCA / PNLG)"),
    ("code", """from interp_steer.evaluation.compare import strength_sweep
items = load_culture(countries=COUNTRY, split="test")
rows = {"none": strength_sweep(model, None, items, [0.0])}
rows["yapo"] = strength_sweep(model, yapo.vector, items, [1.0, 4.0], sae=sae)
rows["bipo"] = strength_sweep(model, bipo.vector, items, [1.0, 4.0])
for name, sweep in rows.items():
    for r in sweep:
        o = r["overall"]
        print(f"{name:5s} λ={r['strength']:<4g} acc {o['accuracy']:.3f}  loc {o['acc_localized']:.3f}  "
              f"non-loc {o['acc_nonlocalized']:.3f}  RCA {o['rca']:.3f}  Δscore {r['score_shift']:.3f}")"""),
    ("md", "## Which SAE latents does the YaPO vector use, and how much does each move the metric?"),
    ("code", """from interp_steer.interpret.attribution import explain, mcq_margin_metric
report = explain(model, yapo.vector, sae, mcq_margin_metric(model, items[:8]), k=10, ablate_top=5, strength=4.0)
usage = report["usage"]
print("latents carrying 50% / 90% of the decoded effect:", usage["n_for_50pct"], "/", usage["n_for_90pct"])
att = report["attribution"]
print("agreement of grad×Δ with ablation:", att["agreement"])
for e in att["top"][:5]:
    print(f"latent {e['latent']}: grad×Δ {e['grad_x_delta']:+.4f}, ablation {e['ablation_effect']}, "
          f"promotes {e.get('logit_lens', {}).get('promoted', [])[:4]}")"""),
    ("md", "## A self-contained feature dashboard (plotly inlined, opens offline)"),
    ("code", """from interp_steer.interpret.dashboard import build_dashboard
from interp_steer.data.corpus import shared_corpus_path
from interp_steer.interpret.latents import corpus_texts
# held-out corpus documents when ../shared/data is beside the checkout, else the culture prompts themselves
texts = corpus_texts(n=40) if shared_corpus_path() else [p.prompt for p in pairs + test_pairs][:40]
sweep = {r["strength"]: r["overall"]["accuracy"] for r in rows["none"] + rows["yapo"]}
dash = build_dashboard(model, sae, yapo.vector, texts, sweep=sweep, n_latents=4, strengths=[4.0], max_length=64)
paths = dash.write(OUT / "dashboard")
print(paths)"""),
]

PATCHING = [
    ("md", """# Where does the country cue live? Activation patching

Clean run: a culture question that names the country; corrupted run: the same question without the cue.
Patching clean residual-stream activations into the corrupted run, per layer × position, shows how much of
the correct option's advantage each site recovers ((m_patched − m_corrupt) / (m_clean − m_corrupt)).
Patching the whole residual stream at the last layer recovers 100 %; patching nothing recovers 0 %."""),
    ("code", """import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path
import interp_steer as its
from interp_steer.interpret.patching import run_patching

OUT = Path(os.environ.get("PATCHING_OUT", "runs/notebook-patching"))
N_ITEMS = int(os.environ.get("PATCHING_ITEMS", 2))
model = its.load_model()
result = run_patching(model, countries=["morocco", "egypt"], n_items=N_ITEMS, component="resid_pre",
                      layers=list(range(0, model.cfg.n_layers, 3)))
print(result.summary(k=5))"""),
    ("code", """paths = result.save(OUT)
print({k: str(v) for k, v in paths.items()})"""),
]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in cells]
    return nb


def main() -> None:
    for name, cells in (("tour", TOUR), ("patching", PATCHING)):
        nbformat.write(build(cells), HERE / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
