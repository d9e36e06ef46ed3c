"""The notebooks execute end to end on the real default model (nbclient), writing into a temporary folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, env: dict[str, str], timeout: int = 900):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is a dev dependency (pip install -e .[dev])")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is a dev dependency (pip install -e .[dev])")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(NOTEBOOKS.parent)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _text(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_notebooks_are_generated_from_build_py():
    import nbformat

    from notebooks.build import PATCHING, TOUR, build  # type: ignore[import-not-found]

    for name, cells in (("tour", TOUR), ("patching", PATCHING)):
        stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert [c.source for c in stored.cells] == [c.source for c in build(cells).cells], name


@pytest.mark.slow
def test_tour_notebook_runs(tmp_path):
    nb = _execute("tour", {"TOUR_OUT": str(tmp_path), "TOUR_STEPS": "12", "HF_HUB_OFFLINE": "1"})
    text = _text(nb)
    assert "yapo: loss" in text and "bipo: loss" in text and "agreement of grad×Δ" in text
    assert (tmp_path / "dashboard" / "dashboard.html").stat().st_size > 100_000
    features = json.loads((tmp_path / "dashboard" / "features.json").read_text())
    assert features["features"], "the dashboard lists the vector's latents"


@pytest.mark.slow
def test_patching_notebook_runs(tmp_path):
    nb = _execute("patching", {"PATCHING_OUT": str(tmp_path), "PATCHING_ITEMS": "1", "HF_HUB_OFFLINE": "1"})
    assert "top_cells" in _text(nb)
    meta = json.loads((tmp_path / "patching.json").read_text())
    assert meta["component"] == "resid_pre" and (tmp_path / "heatmap.html").exists()
