"""How query generation fails: a run that cannot go on, or one answer that is not valid."""

from __future__ import annotations

from semid.io import SemidError


class QueryGenerationError(SemidError):
    """A run that cannot start (no key) or must stop (bad key, too many failures)."""


class InvalidAnswer(Exception):
    """An answer that fails validation; ``reason`` is the counter name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
