"""A secret value (an API key resolved from ``env()``) that never shows itself."""

from __future__ import annotations

from typing import Any


class Secret:
    """A string that does not show itself: ``repr``/``str`` print ``***``; not picklable."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the secret replaced by ``***``."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not picklable; pass the key again where it is needed")
