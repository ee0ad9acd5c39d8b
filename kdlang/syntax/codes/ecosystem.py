"""Diagnostic codes KD0360-KD0369 and KD0415-KD0419 (trackers, hub, students as loaded, checkpoints kept)."""

TABLE: list[tuple[str, str, str]] = []
