"""Diagnostic codes KD0340-KD0344 (compact top-k storage)."""

TABLE: list[tuple[str, str, str]] = []
