"""Loaders that turn every data source of the project into :class:`PreferenceExample` / :class:`MCQItem` lists.

Sources: our culture set (:func:`load_culture`, :func:`culture_preferences`), Deep-Culture-Lense
(:func:`load_deep_culture_lense`, :func:`export_culture_as_dcl`), BiPO CSVs (:func:`load_bipo_csv`,
:func:`load_bipo_ab`), Anthropic model-written evals (:func:`load_mwe`), hh-rlhf (:func:`load_hh_rlhf`) and any
prompt/chosen/rejected table (:func:`load_preferences`).

Local tables may be ``.jsonl`` / ``.jsonl.gz`` (one JSON object per line), ``.json`` (an array of objects),
``.csv`` (header row) or ``.parquet``. Every problem the user can fix raises one
:class:`~interp_steer.errors.InterpSteerError`:

* missing or misnamed columns: the message names the columns found and those expected;
* an empty selection (unknown country, a filter matching nothing, an empty file): the message lists the
  valid values;
* malformed rows (bad JSON, a missing or empty field, a bad answer letter): the message gives their 1-based
  line numbers (the first five, and how many more). Parquet files and hub datasets have no lines: their
  1-based row numbers are given instead.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp_steer.data.culture import CULTURE_TEST_FRACTION, DCL_COUNTRIES, read_culture_rows
from interp_steer.data.jsonl import Row, read_jsonl_rows
from interp_steer.data.schemas import MCQItem, PreferenceExample
from interp_steer.errors import InterpSteerError
from interp_steer.validation import check_file, decode_error

log = logging.getLogger(__name__)

LOCALIZATIONS = ("localized", "nolocalized")
SPLITS = ("train", "test")
FORMS = ("mcq", "open_ended")
DCL_HUB_NAME = "MBZUAI-Paris/Deep-Culture-Lense"
DCL_COLUMNS = ("country", "localization_status", "prompt-mcq", "chosen-mcq", "prompt_open_ended",
               "chosen_open_ended")
_DCL_FORM_COLUMNS = {"mcq": ("prompt-mcq", "chosen-mcq"), "open_ended": ("prompt_open_ended", "chosen_open_ended")}
MCQ_INSTRUCTION = "Answer with the letter and the option."
OPEN_ENDED_DISTRACTOR = "{option} is the usual choice."
# the embedded model's own answers to the open-ended culture prompts (`interp-steer prep-rejected`; see its rows)
CULTURE_REJECTED_FILE = Path(__file__).resolve().parent / "files" / "culture_rejected_open_ended.jsonl"


# ------------------------------------------------------------------------------------------------ tables


@dataclass
class Table:
    """Rows of one source, its columns, and how to name a row position in messages ("line" or "row")."""

    source: str
    rows: list[Row]
    columns: list[str]
    unit: str = "line"

    def require(self, expected: Sequence[str]) -> None:
        """Raise when a column of ``expected`` is missing (message: found and expected columns)."""
        if not self.rows:
            raise InterpSteerError(f"{self.source} is empty (expected columns {list(expected)})")
        missing = [c for c in expected if c not in self.columns]
        if missing:
            raise InterpSteerError(
                f"{self.source}: missing column(s) {missing}; found columns {self.columns}; "
                f"expected {list(expected)}"
            )

    def malformed(self, problems: list[tuple[int, str]]) -> None:
        """Raise listing the first five ``(position, problem)`` pairs, if any."""
        if problems:
            raise InterpSteerError(malformed_message(self.source, problems, self.unit))


def malformed_message(source: str, problems: list[tuple[int, str]], unit: str = "line") -> str:
    """``"<source>: 3 malformed rows at lines 2, 5, 9: line 2: ...; line 5: ..."`` (first five shown)."""
    shown = problems[:5]
    where = ", ".join(str(n) for n, _ in shown) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
    details = "; ".join(f"{unit} {n}: {msg}" for n, msg in shown)
    return f"{source}: {len(problems)} malformed row(s) at {unit}s {where}: {details}"


def _read_csv(path: Path) -> tuple[list[Row], list[tuple[int, str]], list[str]]:
    rows: list[Row] = []
    bad: list[tuple[int, str]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        end = reader.line_num  # the header line
        for row in reader:
            start, end = end + 1, reader.line_num
            if None in row or any(v is None for v in row.values()):
                bad.append((start, f"expected {len(header)} fields"))
            else:
                rows.append((start, row))
    return rows, bad, header


def _read_json_array(path: Path) -> tuple[list[Row], list[tuple[int, str]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InterpSteerError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from exc
    if not isinstance(data, list):
        raise InterpSteerError(f"{path}: expected a JSON array of objects (use .jsonl for one object per line)")
    rows = [(i, r) for i, r in enumerate(data, 1) if isinstance(r, dict)]
    bad = [(i, "not a JSON object") for i, r in enumerate(data, 1) if not isinstance(r, dict)]
    return rows, bad


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    return list(enumerate(pq.read_table(path).to_pylist(), 1))


def read_table(path: str | Path) -> Table:
    """Read a local ``.jsonl[.gz]`` / ``.json`` / ``.csv`` / ``.parquet`` file.

    Columns are the keys seen in any row, in order of appearance (CSV: the header), so a row lacking a field
    the others have is reported as a malformed row, not as a missing column. Unparseable lines raise (with
    line numbers).
    """
    path = check_file(path, "data file")
    try:
        return _read_table(path)
    except UnicodeDecodeError as exc:
        raise decode_error(path, exc) from None


def _read_table(path: Path) -> Table:
    name = path.name.lower()
    header: list[str] | None = None
    unit = "line"
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        rows, bad = read_jsonl_rows(path)
    elif name.endswith(".csv"):
        rows, bad, header = _read_csv(path)
    elif name.endswith(".json"):
        (rows, bad), unit = _read_json_array(path), "row"
    elif name.endswith(".parquet"):
        rows, bad, unit = _read_parquet(path), [], "row"
    else:
        raise InterpSteerError(f"{path}: unsupported format (use .jsonl, .jsonl.gz, .json, .csv or .parquet)")
    columns = header if header is not None else list(dict.fromkeys(k for _, row in rows for k in row))
    table = Table(str(path), rows, columns, unit)
    table.malformed(bad)
    return table


def _hub_table(name: str, split: str | None) -> tuple[Table, dict[int, str]]:
    """All rows of a hub dataset (or of one ``split``) and the hub split each row came from."""
    from datasets import DatasetDict, load_dataset

    try:
        loaded = load_dataset(name, split=split) if split is not None else load_dataset(name)
    except Exception as exc:  # network, authentication, unknown name: all user-fixable
        raise InterpSteerError(f"could not load hub dataset {name!r}: {exc}") from exc
    parts = dict(loaded) if isinstance(loaded, DatasetDict) else {split or "train": loaded}
    rows: list[Row] = []
    origin: dict[int, str] = {}
    for part_name, part in parts.items():
        for row in part:
            rows.append((len(rows) + 1, dict(row)))
            origin[len(rows)] = part_name
    columns = list(next(iter(parts.values())).column_names) if parts else []
    return Table(name, rows, columns, "row"), origin


TABLE_SUFFIXES = (".jsonl", ".gz", ".json", ".csv", ".parquet")


def is_local_source(source: str | Path) -> bool:
    """Whether ``source`` names a local file (it exists, or has a table suffix) rather than a hub dataset."""
    return Path(source).exists() or Path(source).suffix.lower() in TABLE_SUFFIXES


def looks_like_path(source: str | Path) -> bool:
    """Whether ``source`` is written as a file path, existing or not (a separator, or a table or ``.txt``
    suffix): a missing one is then reported as a missing file, not as an unknown dataset name."""
    text = str(source)
    return "/" in text or "\\" in text or Path(text).suffix.lower() in (*TABLE_SUFFIXES, ".txt")


def _field_problems(table: Table, fields: Sequence[str], *, allow_empty: Sequence[str] = ()) -> list[tuple[int, str]]:
    """One problem per row whose ``fields`` are missing, not strings, or empty (unless in ``allow_empty``)."""
    problems = []
    for pos, row in table.rows:
        for f in fields:
            value = row.get(f)
            if not isinstance(value, str):
                problems.append((pos, f"field {f!r} is {'missing' if value is None else type(value).__name__}"))
                break
            if not value.strip() and f not in allow_empty:
                problems.append((pos, f"field {f!r} is empty"))
                break
    return problems


# ------------------------------------------------------------------------------------------------ choices


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _check_choice(name: str, value: str | None, valid: Sequence[str]) -> None:
    if value is not None and value not in valid:
        raise InterpSteerError(f"unknown {name} {value!r}; valid values: {list(valid)}")


def _check_countries(countries: str | Iterable[str] | None, valid: Sequence[str], where: str) -> list[str] | None:
    wanted = _as_list(countries)
    if wanted is None:
        return None
    wanted = [c.lower() for c in wanted]
    unknown = [c for c in wanted if c not in valid]
    if unknown or not wanted:
        raise InterpSteerError(f"unknown country {unknown or wanted} for {where}; valid countries: {list(valid)}")
    return wanted


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 <= test_fraction < 1.0:
        raise InterpSteerError(f"test_fraction must be in [0, 1), got {test_fraction}")


def _empty(where: str, selection: dict[str, Any], valid: dict[str, Sequence[str]]) -> InterpSteerError:
    chosen = ", ".join(f"{k}={v!r}" for k, v in selection.items() if v is not None) or "no filter"
    values = "; ".join(f"valid {k}: {list(v)}" for k, v in valid.items())
    return InterpSteerError(f"{where}: no rows match {chosen} ({values})")


def split_keys(keys_by_country: Mapping[str, Iterable[str]], test_fraction: float, seed: int) -> set[str]:
    """Keys assigned to the test split: per country, the ``round(n * test_fraction)`` keys with the smallest
    ``sha256(f"{seed}:{key}")``. Deterministic, seeded, independent of row order, exact 80/20 per country."""
    test: set[str] = set()
    for keys in keys_by_country.values():
        unique = sorted(set(keys), key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
        test.update(unique[: round(len(unique) * test_fraction)])
    return test


# ------------------------------------------------------------------------------------------------ culture


def format_option(index: int, option: str) -> str:
    """``"(B) Ful medames"`` for ``index=1``."""
    return f"({chr(ord('A') + index)}) {option}"


def format_mcq(question: str, options: Sequence[str]) -> str:
    """The MCQ prompt: the question, one ``(X) option`` line per option, then :data:`MCQ_INSTRUCTION`::

        In Egypt, which dish is a classic everyday breakfast, usually eaten with bread?
        (A) Beans on toast
        (B) Ful medames
        (C) Chilaquiles
        (D) Idli and sambar
        Answer with the letter and the option.
    """
    lines = [question.strip(), *(format_option(i, o) for i, o in enumerate(options)), MCQ_INSTRUCTION]
    return "\n".join(lines)


def load_culture(
    path: str | Path | None = None,
    *,
    countries: str | Iterable[str] | None = None,
    localization: str | None = None,
    split: str | None = None,
    test_fraction: float = CULTURE_TEST_FRACTION,
    seed: int = 0,
) -> list[MCQItem]:
    """Our culture set as MCQ items: one item per stem per localization form (``"localized"`` /
    ``"nolocalized"``; ``localization=None`` gives both, localized first).

    The train/test split is by stem (both forms of a stem share it): per country, the
    ``round(n_stems * test_fraction)`` stems with the smallest ``sha256(f"{seed}:{stem_id}")`` are test.
    ``metadata`` holds ``id`` (``"<stem_id>/<localization>"``), ``stem_id``, ``topic``, ``option_countries``,
    ``split``, ``chosen_open_ended`` and ``source``.
    """
    _check_choice("localization", localization, LOCALIZATIONS)
    _check_choice("split", split, SPLITS)
    _check_fraction(test_fraction)
    rows = read_culture_rows(path)
    present = sorted({r["country"] for r in rows})
    wanted = _check_countries(countries, present, "the culture set")
    by_country: dict[str, list[str]] = {}
    for r in rows:
        by_country.setdefault(r["country"], []).append(r["stem_id"])
    test = split_keys(by_country, test_fraction, seed)
    forms = LOCALIZATIONS if localization is None else (localization,)
    items = []
    for r in rows:
        row_split = "test" if r["stem_id"] in test else "train"
        if (wanted is not None and r["country"] not in wanted) or (split is not None and row_split != split):
            continue
        for form in forms:
            question = r["localized_question" if form == "localized" else "nonlocalized_question"]
            items.append(MCQItem(
                question=question, options=list(r["options"]), answer=r["answer"], country=r["country"],
                localization_status=form,
                metadata={"id": f"{r['stem_id']}/{form}", "stem_id": r["stem_id"], "topic": r["topic"],
                          "option_countries": list(r["option_countries"]), "split": row_split,
                          "chosen_open_ended": r["chosen_open_ended"], "source": "culture"},
            ))
    if not items:
        raise _empty("culture set", {"countries": wanted, "split": split}, {"countries": present,
                                                                            "split": SPLITS})
    return items


def _distractor_index(item: MCQItem, seed: int) -> int:
    """A seeded wrong option, the same for both localization forms of a stem."""
    wrong = [i for i in range(len(item.options)) if i != item.answer]
    return random.Random(f"{seed}:{item.metadata['stem_id']}").choice(wrong)


def _culture_pair(item: MCQItem, form: str, seed: int) -> PreferenceExample:
    wrong = _distractor_index(item, seed)
    if form == "mcq":
        prompt = format_mcq(item.question, item.options)
        chosen = format_option(item.answer, item.options[item.answer])
        rejected = format_option(wrong, item.options[wrong])
    else:
        prompt = item.question
        chosen = item.metadata["chosen_open_ended"]
        rejected = OPEN_ENDED_DISTRACTOR.format(option=item.options[wrong])
    countries = item.metadata.get("option_countries") or [None] * len(item.options)
    meta: dict[str, Any] = {
        "id": f"{item.metadata['id']}/{form}", "country": item.country,
        "localization_status": item.localization_status, "split": item.metadata.get("split"),
        "stem_id": item.metadata["stem_id"], "form": form, "rejected_country": countries[wrong],
        "rejected_source": "template", "source": "culture",
    }
    return PreferenceExample(prompt, chosen, rejected, meta)


def culture_preferences(
    items: list[MCQItem] | None = None,
    *,
    form: str = "mcq",
    rejected_path: str | Path | None = None,
    on_policy: bool | None = None,
    path: str | Path | None = None,
    countries: str | Iterable[str] | None = None,
    localization: str | None = None,
    split: str | None = None,
    test_fraction: float = CULTURE_TEST_FRACTION,
    seed: int = 0,
) -> list[PreferenceExample]:
    """YaPO-style preference pairs from culture items (``items``, or :func:`load_culture` with the filters).

    * ``form="mcq"``: prompt = :func:`format_mcq`; chosen = the correct ``"(X) option"``; rejected = a wrong
      ``"(Y) option"`` drawn with ``random.Random(f"{seed}:{stem_id}")`` (the same for both forms of a stem).
    * ``form="open_ended"``: prompt = the bare question; chosen = ``chosen_open_ended``; rejected =
      :data:`OPEN_ENDED_DISTRACTOR` filled with that same wrong option (always another country's).

    With ``rejected_path`` (the output of ``interp-steer prep-rejected`` run on these pairs) the rejected
    answers are the model's own, matched by ``metadata["id"]`` (``"<stem_id>/<localization>/<form>"``).

    On-policy rejected answers ship for the open-ended form of the shipped set
    (:data:`CULTURE_REJECTED_FILE`, the embedded model's own answers; its rows record the sampling settings):
    ``on_policy=None`` (default) uses them when ``form="open_ended"``, no ``rejected_path`` is given and the
    shipped file holds every pair with the same prompt (always true for the shipped culture set; a custom
    ``path`` falls back to the template); ``on_policy=True`` requires them, ``False`` keeps the template.
    ``metadata`` holds ``id``, ``country``, ``localization_status``, ``split``, ``stem_id``, ``form``,
    ``rejected_country`` (the country of the template's wrong answer; ``None`` for the model's own answers),
    ``rejected_source`` (``"template"``, ``"prep-rejected"`` or ``"shipped"``) and ``source``.
    """
    _check_choice("form", form, FORMS)
    if items is None:
        items = load_culture(path, countries=countries, localization=localization, split=split,
                             test_fraction=test_fraction, seed=seed)
    elif any(v is not None for v in (path, countries, localization, split)):
        raise InterpSteerError("culture_preferences: pass either items or filters (path/countries/...), not both")
    needed = ("id", "stem_id") + (("chosen_open_ended",) if form == "open_ended" else ())
    if any(k not in item.metadata for item in items for k in needed):
        raise InterpSteerError(f"culture_preferences needs culture items (from load_culture) whose metadata has "
                               f"{list(needed)}")
    pairs = [_culture_pair(item, form, seed) for item in items]
    if rejected_path is not None:
        if on_policy is False:
            raise InterpSteerError("culture_preferences: rejected_path= is on-policy data; drop on_policy=False")
        answers = _rejected_answers(rejected_path)
        missing, stale = _unmatched(pairs, answers)
        if missing:
            raise InterpSteerError(
                f"{rejected_path} has no rejected answer for {len(missing)} of {len(pairs)} pairs "
                f"(first: {missing[:3]}); run `interp-steer prep-rejected` on the same selection"
            )
        if stale:
            raise InterpSteerError(f"{rejected_path}: prompts differ from the current pairs for ids {stale[:3]} "
                                   "(generated from another version or form); rerun prep-rejected")
        return _with_rejected(pairs, answers, "prep-rejected")
    if on_policy is True and form != "open_ended":
        raise InterpSteerError(f"on-policy rejected answers ship for form='open_ended' only, not {form!r}; "
                               "generate others with `interp-steer prep-rejected`")
    if form == "open_ended" and on_policy is not False:
        shipped = _shipped_rejected() if CULTURE_REJECTED_FILE.is_file() else {}
        missing, stale = _unmatched(pairs, shipped)
        if not missing and not stale:
            return _with_rejected(pairs, shipped, "shipped")
        if on_policy is True:
            raise InterpSteerError(
                f"{CULTURE_REJECTED_FILE} has no matching rejected answer for {len(missing) + len(stale)} of "
                f"{len(pairs)} pairs (another culture file?); run `interp-steer prep-rejected`")
    return pairs


def _rejected_answers(path: str | Path) -> dict[str, tuple[str, str]]:
    """``id -> (prompt, rejected)`` of a ``prep-rejected`` output file."""
    table = read_table(path)
    table.require(("id", "prompt", "rejected"))
    return {str(row["id"]): (str(row["prompt"]), str(row["rejected"])) for _, row in table.rows}


@functools.cache
def _shipped_rejected() -> dict[str, tuple[str, str]]:
    return _rejected_answers(CULTURE_REJECTED_FILE)


def _unmatched(pairs: list[PreferenceExample], answers: dict[str, tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Ids of ``pairs`` with no answer in ``answers``, and ids whose answer was generated for another prompt."""
    missing = [p.metadata["id"] for p in pairs if p.metadata["id"] not in answers]
    stale = [p.metadata["id"] for p in pairs if p.metadata["id"] in answers and answers[p.metadata["id"]][0] != p.prompt]
    return missing, stale


def _with_rejected(pairs: list[PreferenceExample], answers: dict[str, tuple[str, str]],
                   source: str) -> list[PreferenceExample]:
    return [PreferenceExample(p.prompt, p.chosen, answers[p.metadata["id"]][1],
                              {**p.metadata, "rejected_source": source, "rejected_country": None})
            for p in pairs]  # the model's own answer: it is not a country's template answer


# ------------------------------------------------------------------------------------------ Deep-Culture-Lense


def _dcl_rejected_column(table: Table, form: str, rejected_model: str | None) -> str | None:
    suffix = f"_{form}"
    models = [c[len("rejected_"): -len(suffix)] for c in table.columns
              if c.startswith("rejected_") and c.endswith(suffix) and len(c) > len("rejected_") + len(suffix)]
    if rejected_model == "none":
        return None
    if rejected_model is not None:
        if rejected_model not in models:
            raise InterpSteerError(
                f"{table.source}: no column 'rejected_{rejected_model}{suffix}'; rejected models for "
                f"form={form!r}: {models or 'none'} (columns: {table.columns})"
            )
        return f"rejected_{rejected_model}{suffix}"
    if not models:
        raise InterpSteerError(
            f"{table.source} has no rejected_<model>{suffix} column (columns: {table.columns}); run "
            "`interp-steer prep-rejected --input <this file>` to generate the model's own rejected answers, "
            "or pass rejected_model='none' for pairs with an empty rejected"
        )
    if len(models) > 1:
        raise InterpSteerError(f"{table.source}: several rejected models for form={form!r}: {models}; "
                               "pass rejected_model=<one of them>")
    return f"rejected_{models[0]}{suffix}"


def _dcl_row_problems(table: Table, fields: Sequence[str], has_split: bool) -> list[tuple[int, str]]:
    problems = _field_problems(table, ("country", "localization_status", *fields[:2]))
    problems += [(p, m) for p, m in _field_problems(table, fields[2:], allow_empty=fields[2:])]
    bad = {p for p, _ in problems}
    for pos, row in table.rows:
        if pos in bad:
            continue
        if str(row["country"]).strip().lower() not in DCL_COUNTRIES:
            problems.append((pos, f"country {row['country']!r} is not one of {list(DCL_COUNTRIES)}"))
        elif str(row["localization_status"]).strip().lower() not in LOCALIZATIONS:
            problems.append((pos, f"localization_status {row['localization_status']!r} is not one of "
                                  f"{list(LOCALIZATIONS)}"))
        elif has_split and str(row.get("split")).strip().lower() not in SPLITS:
            problems.append((pos, f"split {row.get('split')!r} is not one of {list(SPLITS)}"))
    return sorted(problems)


def load_deep_culture_lense(
    source: str | Path = DCL_HUB_NAME,
    *,
    countries: str | Iterable[str] | None = None,
    localization: str | None = None,
    split: str | None = None,
    form: str = "mcq",
    rejected_model: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> list[PreferenceExample]:
    """Preference pairs from Deep-Culture-Lense: the hub dataset or a local JSONL/CSV/Parquet file with its
    columns ``country``, ``localization_status`` (``localized``/``nolocalized``), ``prompt-mcq``,
    ``chosen-mcq``, ``prompt_open_ended``, ``chosen_open_ended``, optional ``rejected_<model>_mcq`` /
    ``rejected_<model>_open_ended`` and optional ``split``.

    ``form`` picks the prompt/chosen pair. ``rejected_model``: ``None`` uses the only
    ``rejected_<model>_<form>`` column (error when there are none or several); a name picks that model's
    column; ``"none"`` gives pairs with ``rejected=""`` (prompts and trusted answers only, e.g. as input for
    ``prep-rejected``). The split is the ``split`` column when present (on the hub: the dataset's own
    ``train``/``test`` splits), else a seeded 80/20 by country, grouping rows by ``stem_id`` when present,
    otherwise by ``chosen_open_ended`` so that both forms of a question stay together.
    ``metadata``: ``id`` (1-based row number), ``country``, ``localization_status``, ``split``, ``form``,
    ``rejected_model`` and ``source``.
    """
    _check_choice("form", form, FORMS)
    _check_choice("localization", localization, LOCALIZATIONS)
    _check_choice("split", split, SPLITS)
    _check_fraction(test_fraction)
    wanted = _check_countries(countries, DCL_COUNTRIES, "Deep-Culture-Lense")
    if is_local_source(source):
        table, origin = read_table(source), dict[int, str]()
    else:
        table, origin = _hub_table(str(source), None)
        if set(origin.values()) >= set(SPLITS) and "split" not in table.columns:
            for pos, row in table.rows:
                row["split"] = origin[pos]
            table.columns.append("split")
    table.require(DCL_COLUMNS)
    rejected_col = _dcl_rejected_column(table, form, rejected_model)
    prompt_col, chosen_col = _DCL_FORM_COLUMNS[form]
    has_split = "split" in table.columns
    fields = (prompt_col, chosen_col) + ((rejected_col,) if rejected_col else ())
    table.malformed(_dcl_row_problems(table, fields, has_split))
    rows = [(pos, {**row, "country": row["country"].strip().lower(),
                   "localization_status": row["localization_status"].strip().lower()}) for pos, row in table.rows]
    splits = _dcl_splits(rows, has_split, test_fraction, seed)
    pairs = []
    for pos, row in rows:
        if ((wanted is not None and row["country"] not in wanted)
                or (localization is not None and row["localization_status"] != localization)
                or (split is not None and splits[pos] != split)):
            continue
        meta = {"id": pos, "country": row["country"], "localization_status": row["localization_status"],
                "split": splits[pos], "form": form,
                "rejected_model": rejected_col[len("rejected_"): -len(form) - 1] if rejected_col else None,
                "source": table.source}
        pairs.append(PreferenceExample(row[prompt_col], row[chosen_col],
                                       row[rejected_col] if rejected_col else "", meta))
    if not pairs:
        present = sorted({row["country"] for _, row in rows})
        raise _empty(table.source, {"countries": wanted, "localization": localization, "split": split},
                     {"countries (in this data)": present, "localization": LOCALIZATIONS, "split": SPLITS})
    return pairs


def _dcl_splits(rows: list[Row], has_split: bool, test_fraction: float, seed: int) -> dict[int, str]:
    if has_split:
        return {pos: str(row["split"]).strip().lower() for pos, row in rows}

    def key(row: dict[str, Any]) -> str:
        return str(row.get("stem_id") or row["chosen_open_ended"])

    by_country: dict[str, list[str]] = {}
    for _, row in rows:
        by_country.setdefault(row["country"], []).append(key(row))
    test = split_keys(by_country, test_fraction, seed)
    return {pos: "test" if key(row) in test else "train" for pos, row in rows}


def write_table(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as ``.jsonl``, ``.csv`` or ``.parquet`` (by suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif name.endswith(".csv"):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)
    elif name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise InterpSteerError(f"{path}: unsupported output format (use .jsonl, .csv or .parquet)")
    return path


def export_culture_as_dcl(path: str | Path, items: list[MCQItem] | None = None) -> Path:
    """Write culture items (default: the whole shipped set, both forms) in the Deep-Culture-Lense schema.

    One row per item, so two rows per stem: :data:`DCL_COLUMNS` plus ``split`` (the item's split).
    ``prompt-mcq`` = :func:`format_mcq`, ``chosen-mcq`` = the correct ``"(X) option"``,
    ``prompt_open_ended`` = the question, ``chosen_open_ended`` = the stem's open-ended answer.
    The format follows the suffix (``.jsonl``, ``.csv`` or ``.parquet``).
    """
    items = load_culture() if items is None else items
    rows = [{
        "country": it.country, "localization_status": it.localization_status,
        "prompt-mcq": format_mcq(it.question, it.options),
        "chosen-mcq": format_option(it.answer, it.options[it.answer]),
        "prompt_open_ended": it.question, "chosen_open_ended": it.metadata["chosen_open_ended"],
        "split": it.metadata["split"],
    } for it in items]
    return write_table(path, rows)


# ------------------------------------------------------------------------------------------------ BiPO


def load_bipo_csv(path: str | Path, *, behaviour: str | None = None) -> list[PreferenceExample]:
    """BiPO pairs (``question, matching, not_matching`` → prompt, chosen, rejected).

    Rows with an empty ``question`` (the public power-seeking and wealth-seeking train files have a few)
    cannot serve as prompts: they are skipped with a logged warning naming their lines. ``metadata``:
    ``behaviour`` (default: the parent folder's name), ``split`` (the file stem, e.g. ``train``), ``id``
    (1-based line number) and ``source``.
    """
    path = Path(path)
    table = read_table(path)
    table.require(("question", "matching", "not_matching"))
    table.malformed(_field_problems(table, ("question", "matching", "not_matching"), allow_empty=("question",)))
    no_question = [pos for pos, row in table.rows if not row["question"].strip()]
    if no_question:
        log.warning("%s: skipped %d row(s) with an empty question at lines %s", path, len(no_question),
                    no_question)
    behaviour = behaviour or path.parent.name
    pairs = [PreferenceExample(row["question"], row["matching"], row["not_matching"],
                               {"behaviour": behaviour, "split": path.stem, "id": pos, "source": str(path)})
             for pos, row in table.rows if row["question"].strip()]
    if not pairs:
        raise InterpSteerError(f"{path}: every row has an empty question")
    return pairs


def load_bipo_ab(path: str | Path) -> list[MCQItem]:
    """BiPO A/B items (``question, A, B, matching``): ``options = [A, B]``, ``answer`` = the index of the
    ``matching`` letter (the option showing the behaviour). ``metadata``: ``behaviour``, ``id``, ``source``."""
    path = Path(path)
    table = read_table(path)
    table.require(("question", "A", "B", "matching"))
    problems = _field_problems(table, ("question", "A", "B", "matching"))
    bad = {p for p, _ in problems}
    problems += [(pos, f"matching {row['matching']!r} is not 'A' or 'B'") for pos, row in table.rows
                 if pos not in bad and row["matching"].strip().upper() not in ("A", "B")]
    table.malformed(sorted(problems))
    return [MCQItem(row["question"], [row["A"], row["B"]], "AB".index(row["matching"].strip().upper()),
                    metadata={"behaviour": path.parent.name, "id": pos, "source": str(path)})
            for pos, row in table.rows]


# ---------------------------------------------------------------------------------------- model-written evals

_CHOICES = re.compile(r"(?:^|\s)Choices:\s*")
_ANSWER_TAIL = re.compile(r"\n\s*Answer:\s*$")
_LINE_MARKER = re.compile(r"(?m)^[ \t]*\(([A-Z])\)[ \t]*")
_INLINE_MARKER = re.compile(r"\s*\(([A-Z])\)\s*")
_LETTER = re.compile(r"^\(?([A-Z])\)?$")


def _split_options(block: str, marker: re.Pattern[str]) -> list[str] | None:
    parts = marker.split(block)
    letters, texts = parts[1::2], [t.strip() for t in parts[2::2]]
    expected = [chr(ord("A") + i) for i in range(len(letters))]
    if len(letters) < 2 or letters != expected or parts[0].strip() or not all(texts):
        return None
    return texts


def parse_mwe_question(text: str) -> tuple[str, list[str]] | None:
    """``(question, options)`` from a model-written-evals question, or ``None`` when it has no parseable
    ``Choices:`` block. The question is the text before the last ``Choices:`` without a leading
    ``"Question: "``; options are the ``(A) … (B) …`` entries (one per line, or inline), any number ≥ 2,
    with the trailing ``Answer:`` removed."""
    found = list(_CHOICES.finditer(text))
    if not found:
        return None
    question = text[: found[-1].start()].strip().removeprefix("Question:").strip()
    block = _ANSWER_TAIL.sub("", text[found[-1].end():]).strip()
    options = _split_options(block, _LINE_MARKER) or _split_options(block, _INLINE_MARKER)
    return (question, options) if options and question else None


def load_mwe(path: str | Path, *, as_: str = "preferences") -> list[PreferenceExample] | list[MCQItem]:
    """Anthropic model-written evals (``question``, ``answer_matching_behavior``,
    ``answer_not_matching_behavior``).

    ``as_="preferences"``: prompt = question (verbatim), chosen / rejected = the stripped answer letters
    (e.g. ``"(A)"``). ``as_="texts"``: free-text pairs — prompt = the bare question (no choices), chosen /
    rejected = the matching / not-matching option's text. ``as_="mcq"``: options parsed by
    :func:`parse_mwe_question`, ``answer`` = the index of the matching letter. ``metadata``: ``behaviour`` (file stem), ``id`` (line number), ``source`` and, for
    MCQ, ``not_matching`` (index of the not-matching option).
    """
    _check_choice("as_", as_, ("preferences", "texts", "mcq"))
    path = Path(path)
    table = read_table(path)
    fields = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
    table.require(fields)
    problems = _field_problems(table, fields)
    bad = {p for p, _ in problems}
    parsed: dict[int, tuple[str, list[str], int, int]] = {}
    for pos, row in table.rows:
        if pos in bad:
            continue
        letters = [_LETTER.match(row[f].strip()) for f in fields[1:]]
        if not all(letters):
            problems.append((pos, f"answer letters {row[fields[1]]!r}/{row[fields[2]]!r} are not like ' (A)'"))
            continue
        if as_ in ("mcq", "texts"):
            found = parse_mwe_question(row["question"])
            indices = [ord(m.group(1)) - ord("A") for m in letters if m]
            if found is None:
                problems.append((pos, "no parseable 'Choices: (A) … (B) …' block"))
            elif max(indices) >= len(found[1]):
                problems.append((pos, f"answer letter beyond the {len(found[1])} parsed options"))
            else:
                parsed[pos] = (found[0], found[1], indices[0], indices[1])
    table.malformed(sorted(problems))
    meta = {"behaviour": path.stem, "source": str(path)}
    if as_ == "mcq":
        return [MCQItem(q, opts, ans, metadata={**meta, "id": pos, "not_matching": neg})
                for pos, (q, opts, ans, neg) in parsed.items()]
    if as_ == "texts":
        return [PreferenceExample(q, opts[ans], opts[neg], {**meta, "id": pos, "form": "text"})
                for pos, (q, opts, ans, neg) in parsed.items()]
    return [PreferenceExample(row["question"], row[fields[1]].strip(), row[fields[2]].strip(), {**meta, "id": pos})
            for pos, row in table.rows]


# ------------------------------------------------------------------------------------------------ hh-rlhf

_LAST_ASSISTANT = "\n\nAssistant:"


def load_hh_rlhf(
    path: str | Path, *, max_rows: int | None = None, stats: dict[str, int] | None = None
) -> list[PreferenceExample]:
    """hh-rlhf pairs: each ``chosen`` / ``rejected`` transcript is cut at its LAST ``"\\n\\nAssistant:"``.

    The shared text before it (the ``Human: … Assistant: … Human: …`` transcript, stripped) is the prompt;
    the two final assistant turns (stripped) are chosen and rejected. Rows whose prefixes differ, that have
    no assistant turn, or whose final chosen turn is empty are skipped; the counts are logged and, when a
    ``stats`` dict is given, stored there (``rows``, ``kept``, ``skipped_prefix_mismatch``,
    ``skipped_no_assistant``, ``skipped_empty``). ``max_rows`` limits the rows read from the file.
    ``metadata``: ``id`` (line number) and ``source``.
    """
    table = read_table(path)
    table.require(("chosen", "rejected"))
    rows = table.rows[:max_rows] if max_rows is not None else table.rows
    table.malformed(_field_problems(Table(table.source, rows, table.columns, table.unit), ("chosen", "rejected"),
                                    allow_empty=("chosen", "rejected")))
    counts = {"rows": len(rows), "kept": 0, "skipped_prefix_mismatch": 0, "skipped_no_assistant": 0,
              "skipped_empty": 0}
    pairs = []
    for pos, row in rows:
        cut_c, cut_r = row["chosen"].rfind(_LAST_ASSISTANT), row["rejected"].rfind(_LAST_ASSISTANT)
        if cut_c < 0 or cut_r < 0:
            counts["skipped_no_assistant"] += 1
            continue
        prefix = row["chosen"][:cut_c]
        if prefix != row["rejected"][:cut_r]:
            counts["skipped_prefix_mismatch"] += 1
            continue
        chosen = row["chosen"][cut_c + len(_LAST_ASSISTANT):].strip()
        rejected = row["rejected"][cut_r + len(_LAST_ASSISTANT):].strip()
        if not chosen or not prefix.strip():
            counts["skipped_empty"] += 1
            continue
        pairs.append(PreferenceExample(prefix.strip(), chosen, rejected, {"id": pos, "source": table.source}))
    counts["kept"] = len(pairs)
    log.info("hh-rlhf %s: %s", table.source, counts)
    if stats is not None:
        stats.update(counts)
    if not pairs:
        raise InterpSteerError(f"{table.source}: no usable hh-rlhf pairs ({counts})")
    return pairs


# ------------------------------------------------------------------------------------------------ generic


def _apply_filters(table: Table, filters: dict[str, Any]) -> list[Row]:
    missing = [k for k in filters if k not in table.columns]
    if missing:
        raise InterpSteerError(f"{table.source}: filter column(s) {missing} not found; found columns "
                               f"{table.columns}")
    rows = table.rows
    for column, value in filters.items():
        allowed = {str(v) for v in (value if isinstance(value, (list, tuple, set)) else [value])}
        rows = [(pos, row) for pos, row in rows if str(row.get(column)) in allowed]
    if not rows:
        raise _empty(table.source, filters, {k: sorted({str(r.get(k)) for _, r in table.rows}) for k in filters})
    return rows


def load_preferences(
    path_or_hub_name: str | Path,
    *,
    prompt: str = "prompt",
    chosen: str = "chosen",
    rejected: str | None = "rejected",
    split: str | None = None,
    **filters: Any,
) -> list[PreferenceExample]:
    """Preference pairs from any local JSONL/CSV/Parquet file or hub dataset, with a column mapping.

    ``rejected=None`` reads prompt/chosen only (``rejected=""``). ``split``: for a local file, keep rows whose
    ``split`` column equals it; for a hub dataset, the hub split to load (default: all splits).
    ``filters`` keep rows whose column equals the value (or one of a list of values), e.g.
    ``country="egypt"``. ``metadata``: every other column (a ``metadata`` dict column is merged in), ``id``
    (the row's own ``id`` column, else its line/row number) and ``source``.
    """
    if is_local_source(path_or_hub_name):
        table = read_table(path_or_hub_name)
        if split is not None:
            filters = {"split": split, **filters}
    else:
        table = _hub_table(str(path_or_hub_name), split)[0]
    fields = (prompt, chosen) + ((rejected,) if rejected else ())
    table.require(fields)
    rows = _apply_filters(table, filters) if filters else table.rows
    selected = Table(table.source, rows, table.columns, table.unit)
    selected.malformed(_field_problems(selected, fields, allow_empty=(rejected,) if rejected else ()))
    pairs = []
    for pos, row in rows:
        raw_meta = row.get("metadata")
        extra: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        meta = {**{k: v for k, v in row.items() if k not in (*fields, "metadata")}, **extra}
        meta.setdefault("id", pos)
        meta["source"] = table.source
        pairs.append(PreferenceExample(row[prompt], row[chosen], row[rejected] if rejected else "", meta))
    return pairs
