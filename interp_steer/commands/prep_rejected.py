"""``interp-steer prep-rejected``: on-policy rejected answers (the model's own), implemented in
:mod:`interp_steer.data.rejected`."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    from interp_steer.data.rejected import add_prep_rejected_parser

    add_prep_rejected_parser(sub)
