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
