"""Diagnostic codes KD0375-KD0379 (the decode engine)."""

TABLE: list[tuple[str, str, str]] = []
