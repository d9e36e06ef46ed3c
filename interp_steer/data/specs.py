"""Dataset specs used by the CLI and the demo: one string names a set of preference pairs.

* ``culture`` – the project's culture set (filters: countries, localization, form, split)
* ``bipo:<behaviour>`` – ``../shared/data/bipo/<behaviour>/{train,test}.csv``
* ``mwe:<name>`` – ``../shared/data/model-written-evals/<name>.jsonl`` (A/B answer letters as responses;
  ``form="text"``: the bare question with the options' texts as responses); first 80 % train, last 20 % test
* ``dcl`` or ``dcl:<file>`` – Deep-Culture-Lense from the hub or a local file in its schema
* a path to a JSONL/CSV/Parquet file with ``prompt``, ``chosen``, ``rejected`` columns (all rows, whatever
  the split: see :func:`has_splits`)

:func:`load_behaviour_file` reads a user's own held-out behaviour file (model-written-evals, BiPO or pair columns)
as A/B items and free-text pairs, for ``interp-steer evaluate --data FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp_steer.data.schemas import PreferenceExample
from interp_steer.errors import InterpSteerError


def shared_data_dir() -> Path | None:
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *here.parents):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def _shared(*parts: str) -> Path:
    root = shared_data_dir()
    if root is None:
        raise InterpSteerError("../shared/data not found (public data sets live beside the checkout)")
    path = root.joinpath(*parts)
    if not path.exists():
        raise InterpSteerError(f"{path} not found")
    return path


def _known(spec: str, prefix: str, name: str, valid: list[str]) -> None:
    if name not in valid:
        raise InterpSteerError(f"unknown dataset {spec!r}: {prefix}:<name> takes one of {', '.join(valid)}")


MWE_TRAIN_SHARE = 0.8  # model-written evals: the first 80 % of a file is its training split, the rest its test


def has_splits(spec: str) -> bool:
    """Whether ``spec`` has its own train/test split (plain files do not)."""
    return not Path(spec).exists()


def load_pairs(spec: str, *, split: str = "train", countries: Any = None, localization: str | None = None,
               form: str = "mcq", limit: int | None = None, seed: int = 0) -> list[PreferenceExample]:
    """Preference pairs named by ``spec`` (see the module docstring); ``split`` is "train" or "test"."""
    from interp_steer.data import loaders

    if spec == "culture":
        pairs = loaders.culture_preferences(countries=countries, localization=localization, split=split, form=form,
                                            seed=seed)
    elif spec.startswith("bipo:"):
        behaviour = spec.split(":", 1)[1]
        _known(spec, "bipo", behaviour, sorted(p.name for p in _shared("bipo").iterdir() if p.is_dir()))
        pairs = loaders.load_bipo_csv(_shared("bipo", behaviour, f"{split}.csv"), behaviour=behaviour)
    elif spec.startswith("mwe:"):
        name = spec.split(":", 1)[1]
        _known(spec, "mwe", name, sorted(p.stem for p in _shared("model-written-evals").glob("*.jsonl")))
        all_pairs = loaders.load_mwe(_shared("model-written-evals", f"{name}.jsonl"),
                                     as_="texts" if form == "text" else "preferences")
        cut = int(len(all_pairs) * MWE_TRAIN_SHARE)
        pairs = list(all_pairs[:cut] if split == "train" else all_pairs[cut:])  # type: ignore[arg-type]
    elif spec == "dcl" or spec.startswith("dcl:"):
        source = spec.split(":", 1)[1] if ":" in spec else "MBZUAI-Paris/Deep-Culture-Lense"
        pairs = loaders.load_deep_culture_lense(source, countries=countries, localization=localization,
                                                split=split, form=form, seed=seed)
    elif Path(spec).exists():
        if Path(spec).is_dir():
            raise InterpSteerError(f"data path {spec} is a directory; expected a JSONL/CSV/Parquet file")
        pairs = loaders.load_preferences(spec)  # a plain file has no split: callers hold out their own
    elif loaders.looks_like_path(spec):
        raise InterpSteerError(f"data file not found: {spec}")
    else:
        raise InterpSteerError(
            f"unknown dataset {spec!r}: use culture, bipo:<behaviour>, mwe:<name>, dcl[:<file>] or a file path"
        )
    if limit is not None:
        pairs = pairs[:limit]
    if not pairs:
        raise InterpSteerError(f"dataset {spec!r} ({split}) selected no pairs")
    return pairs


def load_ab_items(spec: str, *, split: str = "test") -> list[Any]:
    """A behaviour set's A/B questions (:class:`~interp_steer.data.schemas.MCQItem`) of ``split``, the same
    items as :func:`load_pairs`' free-text pairs: BiPO's ``test_infer.csv`` (a BiPO set has A/B items for its test
    split only, so ``split="train"`` gives none) or the model-written evals' parsed choices, cut like the pairs."""
    from interp_steer.data import loaders

    if not spec.startswith(("bipo:", "mwe:")):
        raise InterpSteerError(f"A/B items exist for bipo:<behaviour> and mwe:<name> sets, not {spec!r}")
    name = spec.split(":", 1)[1]
    if spec.startswith("bipo:"):
        return list(loaders.load_bipo_ab(_shared("bipo", name, "test_infer.csv"))) if split == "test" else []
    items: list[Any] = list(loaders.load_mwe(_shared("model-written-evals", f"{name}.jsonl"), as_="mcq"))
    cut = int(len(items) * MWE_TRAIN_SHARE)
    return items[:cut] if split == "train" else items[cut:]


# The column sets a held-out behaviour file may have, and what each gives (see load_behaviour_file)
MWE_COLUMNS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
BIPO_COLUMNS = ("question", "matching", "not_matching")
BIPO_AB_COLUMNS = ("question", "A", "B", "matching")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def load_behaviour_file(path: str | Path) -> tuple[list[Any], list[PreferenceExample]]:
    """A behaviour file of someone's own held-out items, whole (a file has no split): its A/B questions
    (:class:`~interp_steer.data.schemas.MCQItem`) and its free-text pairs (bare question, matching answer, other
    answer), told apart by the file's columns:

    * model-written evals (``question``, ``answer_matching_behavior``, ``answer_not_matching_behavior``, e.g.
      Anthropic's human-written advanced-ai-risk files): both, the texts parsed from the ``Choices:`` block;
    * BiPO pairs (``question``, ``matching``, ``not_matching``): free text only;
    * BiPO A/B items (``question``, ``A``, ``B``, ``matching``): A/B only;
    * preference pairs (``prompt``, ``chosen`` = matching answer, ``rejected``): free text only.
    """
    from interp_steer.data import loaders

    path = Path(path)
    if not path.exists():
        raise InterpSteerError(f"data file not found: {path}")
    if path.is_dir():
        raise InterpSteerError(f"data path {path} is a directory; expected a JSONL/CSV/Parquet file")
    columns = set(loaders.read_table(path).columns)
    if columns >= set(MWE_COLUMNS):
        items: list[Any] = list(loaders.load_mwe(path, as_="mcq"))
        return items, list(loaders.load_mwe(path, as_="texts"))  # type: ignore[arg-type]
    if columns >= set(BIPO_COLUMNS):
        return [], loaders.load_bipo_csv(path)
    if columns >= set(BIPO_AB_COLUMNS):
        return list(loaders.load_bipo_ab(path)), []
    if columns >= set(PAIR_COLUMNS):
        return [], loaders.load_preferences(path)
    raise InterpSteerError(
        f"{path}: not a behaviour file; found columns {sorted(columns)}; expected the columns of model-written "
        f"evals {list(MWE_COLUMNS)}, BiPO pairs {list(BIPO_COLUMNS)}, BiPO A/B items {list(BIPO_AB_COLUMNS)} or "
        f"preference pairs {list(PAIR_COLUMNS)}")

