"""Diagnostic codes KD0370-KD0374 (packing and the distributed engine)."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0370",
        "two ways of splitting a step into micro-batches",
        "A step's rows are split into micro-batches either by a count (`grad_accum`: that many "
        "nearly equal parts) or by a token budget (`tokens_per_micro_batch`: as many "
        "micro-batches as the rows' tokens need, a row never split). Given both, one of them "
        "would do nothing: keep the one you mean.",
    ),
]
