"""The two record types every loader returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PreferenceExample:
    """One preference pair: ``chosen`` is the behaviour to steer toward, ``rejected`` the one to steer away from.

    ``metadata`` carries what the source knows: ``country``, ``localization_status`` ("localized" /
    "nolocalized"), ``behaviour``, ``split``, ``source``, ``id``...
    """

    prompt: str
    chosen: str
    rejected: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MCQItem:
    """A multiple-choice question: ``options[answer]`` is correct.

    For behaviour A/B items ``answer`` is the index of the option matching the behaviour; for culture items the
    option typical of ``country``. ``localization_status`` is "localized" (the question names the country) or
    "nolocalized" (no cultural cue), ``None`` when not applicable.
    """

    question: str
    options: list[str]
    answer: int
    country: str | None = None
    localization_status: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.answer < len(self.options):
            raise ValueError(f"answer index {self.answer} out of range for {len(self.options)} options")

    @property
    def letters(self) -> list[str]:
        return [chr(ord("A") + i) for i in range(len(self.options))]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_preference_examples(examples: Any) -> list[PreferenceExample]:
    """Preference pairs from what users of steering toolkits pass: :class:`PreferenceExample` objects,
    ``(prompt, chosen, rejected)`` tuples/lists, or dicts with ``prompt``, ``chosen`` and ``rejected`` keys
    (plus an optional ``metadata`` dict). Anything else is refused with one error naming the bad item."""
    from interp_steer.errors import InterpSteerError

    if isinstance(examples, (str, bytes, dict)) or not hasattr(examples, "__iter__"):
        raise InterpSteerError("expected a sequence of preference pairs (PreferenceExample, (prompt, chosen, "
                               f"rejected) tuples or dicts), got {type(examples).__name__}")
    out: list[PreferenceExample] = []
    for i, ex in enumerate(examples):
        if isinstance(ex, PreferenceExample):
            item = ex
        elif isinstance(ex, dict):
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in ex]
            if missing:
                raise InterpSteerError(f"preference pair {i} lacks key(s) {missing}; found {sorted(ex)}")
            meta = ex.get("metadata") or {}
            if not isinstance(meta, dict):
                raise InterpSteerError(f"preference pair {i}: metadata must be a dict, got {type(meta).__name__}")
            item = PreferenceExample(ex["prompt"], ex["chosen"], ex["rejected"], dict(meta))
        elif isinstance(ex, (tuple, list)):
            if len(ex) != 3:
                raise InterpSteerError(f"preference pair {i} has {len(ex)} fields; expected (prompt, chosen, rejected)")
            item = PreferenceExample(*ex)
        else:
            raise InterpSteerError(f"preference pair {i} is a {type(ex).__name__}; expected a PreferenceExample, "
                                   "a (prompt, chosen, rejected) tuple or a dict with those keys")
        for name in ("prompt", "chosen", "rejected"):
            if not isinstance(getattr(item, name), str):
                raise InterpSteerError(f"preference pair {i}: {name} must be a string, got "
                                       f"{type(getattr(item, name)).__name__}")
        out.append(item)
    return out
