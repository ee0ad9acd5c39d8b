"""Diagnostic codes KD0330-KD0339 (captured-logit layouts)."""

TABLE: list[tuple[str, str, str]] = []
