"""Diagnostic codes of the data operators (map, explode, union, column keep/drop, data export) and expressions over structured values."""

TABLE: list[tuple[str, str, str]] = []
