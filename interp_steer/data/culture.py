"""Our own culture set (``files/culture_mini.jsonl``): reading, country vocabulary and validation.

Each line of the file is one *stem*::

    {"stem_id": "egypt-02", "country": "egypt", "topic": "food",
     "localized_question": "In Egypt, which dish ...?",        # names the country
     "nonlocalized_question": "In my family, which dish ...?",  # no cultural cue at all
     "options": [4 strings], "option_countries": [4 distinct countries],
     "answer": 1,                                               # options[answer] is typical of `country`
     "chosen_open_ended": "Ful medames, slow-cooked fava beans ..."}

:func:`validate_culture` checks the structural rules and that the non-localized questions and the options
carry no cue that gives the country away (:data:`FORBIDDEN_TERMS`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from interp_steer.data.jsonl import read_jsonl_rows
from interp_steer.errors import InterpSteerError

CULTURE_FILE = Path(__file__).resolve().parent / "files" / "culture_mini.jsonl"

CULTURE_FIELDS = (
    "stem_id", "country", "topic", "localized_question", "nonlocalized_question", "options",
    "option_countries", "answer", "chosen_open_ended",
)

MIN_COUNTRIES = 6
MIN_STEMS_PER_COUNTRY = 100
# the train/test split of the culture set: with >= 100 stems per country, >= 30 test stems per country
CULTURE_TEST_FRACTION = 0.3
N_OPTIONS = 4

# Names and demonyms of the 15 Deep-Culture-Lense countries (a localized question must use one of its own).
COUNTRY_NAMES: dict[str, tuple[str, ...]] = {
    "egypt": ("Egypt", "Egyptian"),
    "morocco": ("Morocco", "Moroccan"),
    "ksa": ("Saudi Arabia", "Saudi", "KSA", "Kingdom of Saudi Arabia"),
    "levantine": ("Levant", "Levantine", "Lebanon", "Lebanese", "Syria", "Syrian", "Jordan", "Jordanian",
                  "Palestine", "Palestinian"),
    "usa": ("United States", "USA", "U.S.", "US", "America", "American"),
    "uk": ("United Kingdom", "UK", "U.K.", "Britain", "Great Britain", "British", "Briton", "England",
           "English", "Scotland", "Scottish", "Wales", "Welsh", "Northern Ireland"),
    "australia": ("Australia", "Australian", "Aussie"),
    "spain": ("Spain", "Spanish", "Spaniard"),
    "mexico": ("Mexico", "Mexican"),
    "bolivia": ("Bolivia", "Bolivian"),
    "brazil": ("Brazil", "Brasil", "Brazilian"),
    "portugal": ("Portugal", "Portuguese"),
    "mozambique": ("Mozambique", "Mozambican"),
    "india": ("India", "Indian"),
    "nepal": ("Nepal", "Nepali", "Nepalese"),
}
DCL_COUNTRIES: tuple[str, ...] = tuple(COUNTRY_NAMES)

_LANGUAGES = (
    "Arabic", "Darija", "Amazigh", "Berber", "Tamazight", "Coptic", "Hebrew", "Hindi", "Urdu", "Bengali",
    "Bangla", "Tamil", "Telugu", "Marathi", "Gujarati", "Punjabi", "Kannada", "Malayalam", "Sanskrit",
    "Maithili", "Newari", "Catalan", "Basque", "Galician", "Castilian", "Nahuatl", "Quechua", "Aymara",
    "Guarani", "Tupi", "Swahili", "Changana", "Makhuwa", "Gaelic", "Cornish", "Creole",
)
_PLACES = (
    # capitals and big cities
    "Cairo", "Alexandria", "Luxor", "Aswan", "Giza", "Rabat", "Casablanca", "Marrakech", "Marrakesh",
    "Fes", "Tangier", "Chefchaouen", "Agadir", "Riyadh", "Jeddah", "Mecca", "Makkah", "Beirut", "Damascus",
    "Aleppo", "Amman", "Jerusalem", "Gaza", "Washington", "New York", "Los Angeles", "Chicago", "Texas",
    "California", "Hollywood", "London", "Edinburgh", "Cardiff", "Belfast", "Manchester", "Liverpool",
    "Yorkshire", "Cornwall", "Canberra", "Sydney", "Melbourne", "Madrid", "Barcelona", "Seville", "Sevilla",
    "Valencia", "Mexico City", "Oaxaca", "Guadalajara", "Puebla", "La Paz", "Sucre", "Santa Cruz",
    "Cochabamba", "Potosi", "Brasilia", "Rio de Janeiro", "Rio", "Sao Paulo", "Salvador", "Lisbon", "Lisboa",
    "Porto", "Maputo", "Beira", "New Delhi", "Delhi", "Mumbai", "Bombay", "Kolkata", "Calcutta", "Chennai",
    "Madras", "Bangalore", "Bengaluru", "Hyderabad", "Kathmandu", "Pokhara",
    # famous regions and landmarks
    "Nile", "Sinai", "Sahara", "Atlas Mountains", "Maghreb", "Hejaz", "Najd", "Arabian", "Arabia",
    "New England", "Midwest", "Outback", "Catalonia", "Andalusia", "Andalusian", "Castile", "Galicia",
    "Basque Country", "Yucatan", "Jalisco", "Chiapas", "Aztec", "Titicaca", "Andes", "Andean", "Amazon",
    "Amazonian", "Bahia", "Minas Gerais", "Algarve", "Madeira", "Azores", "Kerala", "Punjab", "Rajasthan",
    "Gujarat", "Bengal", "Goa", "Kashmir", "Himalaya", "Himalayas", "Himalayan", "Everest", "Sherpa",
    "Ganges",
)
_OTHER_COUNTRIES = (
    "Tunisia", "Tunisian", "Algeria", "Algerian", "Libya", "Libyan", "Iraq", "Iraqi", "Iran", "Iranian",
    "Persian", "Turkish", "Istanbul", "Israel", "Israeli", "Yemen", "Yemeni", "Emirati", "UAE", "Qatar",
    "Kuwait", "Oman", "Omani", "Gulf", "Japan", "Japanese", "Tokyo", "China", "Chinese", "Beijing", "Korea",
    "Korean", "Seoul", "France", "French", "Paris", "Italy", "Italian", "Rome", "Greece", "Greek", "Athens",
    "Germany", "German", "Berlin", "Ireland", "Irish", "Dublin", "Russia", "Russian", "Moscow", "Sweden",
    "Swedish", "Finland", "Finnish", "Norway", "Norwegian", "Denmark", "Danish", "Netherlands", "Dutch",
    "Belgium", "Belgian", "Switzerland", "Swiss", "Austria", "Austrian", "Poland", "Czech", "Cyprus",
    "Cypriot", "Argentina", "Argentine", "Argentinian", "Chilean", "Peru", "Peruvian", "Colombia",
    "Colombian", "Venezuela", "Venezuelan", "Ecuador", "Ecuadorian", "Cuba", "Cuban", "Canada", "Canadian",
    "Philippines", "Filipino", "Indonesia", "Indonesian", "Malaysia", "Malaysian", "Thailand", "Thai",
    "Vietnam", "Vietnamese", "Pakistan", "Pakistani", "Bangladesh", "Sri Lanka", "Nigeria", "Nigerian",
    "Ethiopia", "Ethiopian", "Kenya", "Kenyan", "Angola", "Angolan", "South Africa", "New Zealand",
)
_GENERIC = (
    "Europe", "European", "Africa", "African", "Asia", "Asian", "Middle East", "Middle Eastern",
    "Mediterranean", "Arab", "Latin America", "Latin American", "South America", "South American",
    "North America", "North American", "Central America", "Caribbean", "Scandinavia", "Scandinavian",
    "Iberia", "Iberian", "Balkan", "Hispanic", "Latino", "Latina", "Oriental", "Anglo", "Subcontinent",
    "Oceania", "Lusophone", "Francophone", "Anglophone",
)

FORBIDDEN_TERMS: tuple[str, ...] = tuple(sorted(
    {t for names in COUNTRY_NAMES.values() for t in names}
    | set(_LANGUAGES) | set(_PLACES) | set(_OTHER_COUNTRIES) | set(_GENERIC)
))
"""Country, demonym, language and place names (whole word, case- and accent-insensitive, optional plural
"s") that must not appear in a non-localized question or in any option. Terms that are also ordinary
English words when lower-cased (:data:`CASE_SENSITIVE_TERMS`) match only with their exact capitalisation.
Country names that are everyday nouns (Chile the pepper, Turkey the bird, China the porcelain, Jersey the
garment, Polish, Georgia) are left out; their unambiguous demonyms and capitals are in. Names of cultural
items themselves (e.g. "Bollywood songs", "K-pop") are not place names and are allowed: options are
culture-specific by design."""

CASE_SENSITIVE_TERMS = frozenset({"US"})


def _fold(text: str) -> str:
    """Strip accents so that "México", "São Paulo" and "Brasília" match their plain spellings."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _term_pattern(terms: tuple[str, ...] | list[str], *, ignore_case: bool) -> re.Pattern[str]:
    parts = [r"\s+".join(re.escape(w) for w in _fold(t).split()) for t in sorted(terms, key=len, reverse=True)]
    flags = re.IGNORECASE if ignore_case else 0
    return re.compile(r"(?<![\w])(?:" + "|".join(parts) + r")s?(?![\w])", flags)


@cache
def _patterns(terms: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str] | None]:
    plain = [t for t in terms if t not in CASE_SENSITIVE_TERMS]
    exact = [t for t in terms if t in CASE_SENSITIVE_TERMS]
    return (_term_pattern(plain, ignore_case=True),
            _term_pattern(exact, ignore_case=False) if exact else None)


def find_terms(text: str, terms: tuple[str, ...] = FORBIDDEN_TERMS) -> list[str]:
    """The terms of ``terms`` that occur in ``text`` (as written in ``text``), in order of appearance."""
    folded = _fold(text)
    hits: list[tuple[int, str]] = []
    for pattern in _patterns(terms):
        if pattern is not None:
            hits.extend((m.start(), m.group(0)) for m in pattern.finditer(folded))
    return [h for _, h in sorted(hits)]


def names_country(text: str, country: str) -> bool:
    """Whether ``text`` names ``country`` (a Deep-Culture-Lense key) or uses its demonym."""
    return bool(find_terms(text, COUNTRY_NAMES.get(country, (country,))))


def culture_path(path: str | Path | None = None) -> Path:
    """``path``, or the shipped culture file when ``None``; raises when the file does not exist."""
    resolved = CULTURE_FILE if path is None else Path(path)
    if not resolved.is_file():
        raise InterpSteerError(f"culture file not found: {resolved}")
    return resolved


def _parse_lines(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """``(line number, row)`` for every parseable line plus ``(line number, problem)`` per bad line."""
    parsed, problems = read_jsonl_rows(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, row in parsed:
        missing = [f for f in CULTURE_FIELDS if f not in row]
        if missing:
            problems.append((lineno, f"missing field(s) {missing}"))
        else:
            rows.append((lineno, row))
    return rows, sorted(problems)


def _shape_problems(lineno: int, row: dict[str, Any]) -> list[tuple[int, str]]:
    """Problems that make a row unusable: option lists and the answer index."""
    options, countries, answer = row["options"], row["option_countries"], row["answer"]
    if not isinstance(options, list) or not isinstance(countries, list) or len(options) != len(countries):
        return [(lineno, "options and option_countries must be lists of the same length")]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
        return [(lineno, f"answer {answer!r} is not an index into {len(options)} options")]
    return []


def _usable_rows(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Rows (with ``_line``) that parse and have a valid shape, and the problems of the others, by line."""
    parsed, problems = _parse_lines(path)
    rows = []
    for lineno, row in parsed:
        shape = _shape_problems(lineno, row)
        problems += shape
        if not shape:
            rows.append({**row, "_line": lineno})
    return rows, sorted(problems)


def read_culture_rows(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The stems of a culture file, each with ``_line`` (1-based line number) added.

    Raises :class:`InterpSteerError` naming the first five bad lines when a line is not a JSON object with
    all of :data:`CULTURE_FIELDS`, or when its option lists / answer index are malformed.
    """
    resolved = culture_path(path)
    rows, problems = _usable_rows(resolved)
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        details = "; ".join(f"line {n}: {msg}" for n, msg in problems[:5])
        raise InterpSteerError(f"{resolved}: {len(problems)} malformed row(s): {details}{more}")
    if not rows:
        raise InterpSteerError(f"{resolved} is empty (expected one JSON object per line with {CULTURE_FIELDS})")
    return rows


def _row_problems(row: dict[str, Any]) -> list[str]:
    """Content rules for one stem (see :func:`validate_culture`)."""
    where = f"line {row['_line']} ({row['stem_id']})"
    problems = []
    options, countries, answer = row["options"], row["option_countries"], row["answer"]
    if len(options) != N_OPTIONS:
        problems.append(f"{where}: {len(options)} options, expected {N_OPTIONS}")
    if len(set(countries)) != len(countries):
        problems.append(f"{where}: option_countries are not distinct: {countries}")
    if countries.count(row["country"]) != 1:
        problems.append(f"{where}: {countries.count(row['country'])} options belong to {row['country']}, "
                        "expected exactly one")
    elif countries[answer] != row["country"]:
        problems.append(f"{where}: option_countries[answer] is {countries[answer]!r}, not {row['country']!r}")
    if len({str(o).strip().lower() for o in options}) != len(options):
        problems.append(f"{where}: duplicate options {options}")
    if not names_country(row["localized_question"], row["country"]):
        problems.append(f"{where}: the localized question does not name {row['country']!r}")
    for field, text in [("nonlocalized_question", row["nonlocalized_question"])] + [
        (f"option {i}", str(o)) for i, o in enumerate(options)
    ]:
        hits = find_terms(text, FORBIDDEN_TERMS)
        if hits:
            problems.append(f"{where}: {field} {text!r} contains country cue(s) {hits}")
    return problems


def validate_culture(path: str | Path | None = None) -> list[str]:
    """Check a culture file; returns one string per problem (an empty list means valid).

    Rules: every line is a JSON object with :data:`CULTURE_FIELDS`; at least :data:`MIN_COUNTRIES`
    countries with at least :data:`MIN_STEMS_PER_COUNTRY` stems each; unique ``stem_id``; 4 distinct options
    with distinct ``option_countries``; exactly one option belongs to the stem's country and it is the
    ``answer``; the localized question names the country (or uses its demonym); neither the non-localized
    question nor any option contains a :data:`FORBIDDEN_TERMS` entry.
    """
    rows, bad = _usable_rows(culture_path(path))
    problems = [f"line {n}: {msg}" for n, msg in bad]
    for row in rows:
        problems += _row_problems(row)
    ids = Counter(row["stem_id"] for row in rows)
    problems += [f"stem_id {sid!r} is used {n} times" for sid, n in sorted(ids.items()) if n > 1]
    per_country = Counter(row["country"] for row in rows)
    if len(per_country) < MIN_COUNTRIES:
        problems.append(f"{len(per_country)} countries ({sorted(per_country)}), expected at least {MIN_COUNTRIES}")
    problems += [f"country {c!r} has {n} stems, expected at least {MIN_STEMS_PER_COUNTRY}"
                 for c, n in sorted(per_country.items()) if n < MIN_STEMS_PER_COUNTRY]
    return problems
