"""Diagnostic codes KD0323-KD0329 (evaluation during training, adaptive off-policy, sequence-level KD)."""

TABLE: list[tuple[str, str, str]] = []
