"""Diagnostic codes KD0375-KD0379 (the decode engine and its sampling settings)."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0375",
        "`top_k` on a greedy step",
        "`top_k = K` keeps only the K most likely tokens when a model samples, but `judge` and "
        "`evaluate` decode greedily unless `temperature` is given (it defaults to 0), so the "
        "setting would do nothing. Give `temperature = 0.7` (or any value above 0) as well, or "
        "remove `top_k`.",
    ),
]
