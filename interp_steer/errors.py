"""One exception type for problems the user can fix (bad input, incompatible artifacts).

The CLI prints these as a single line and exits with status 2; library users can catch them.
"""

from __future__ import annotations


class InterpSteerError(ValueError):
    """A problem with the caller's input: a bad path, a missing column, an incompatible artifact."""
