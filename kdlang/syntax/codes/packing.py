"""Diagnostic codes KD0370-KD0374 (packing and the distributed engine)."""

TABLE: list[tuple[str, str, str]] = []
