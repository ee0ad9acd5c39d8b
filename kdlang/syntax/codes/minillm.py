"""Diagnostic codes KD0350-KD0359 (MiniLLM)."""

TABLE: list[tuple[str, str, str]] = []
