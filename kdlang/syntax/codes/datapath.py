"""Diagnostic codes KD0255-KD0259 (the Arrow data path)."""

TABLE: list[tuple[str, str, str]] = []
