"""Diagnostic codes KD0330-KD0339 (captured-logit layouts)."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0330",
        "a column of the captured-logit layout is missing",
        "A dataset declared with `logits = topk(layout = L)` must hold the columns layout L "
        "reads: kdlang `topk_ids`, `topk_logprobs`; axolotl `input_ids`, `target_token_ids`, "
        "`target_logprobs`, `target_mask`; prompt_logprobs `input_ids`, `prompt_logprobs`; "
        "distillkit `input_ids`, `compressed_logprobs`, `bytepacked_indices`. Name the data's "
        "own columns with `ids = ...`, `logprobs = ...`, `mask = ...` or `tokens = ...` where "
        "they are called otherwise.",
    ),
    (
        "KD0331",
        "a captured-logit column has the wrong type",
        "The columns of a captured-logit layout hold lists (one entry per position); vLLM's "
        "`prompt_logprobs` may also be a JSON string per row. A column of another type (text, a "
        "number, a map) cannot be those log-probs: point the setting at the right column.",
    ),
    (
        "KD0332",
        "this setting has no meaning for the captured-logit layout",
        "Each layout reads its own columns: `mask` belongs to axolotl, `tokens` to every layout "
        "but kdlang (whose rows are scored on the train's own target), `ids` to every layout "
        "but prompt_logprobs (whose maps hold the ids), `config` to distillkit. A setting the "
        "layout does not read would do nothing, so it is an error: remove it or change the "
        "layout.",
    ),
    (
        "KD0333",
        "DistillKit's compression config is missing or unreadable",
        "DistillKit's compressed logits can only be decoded with the compression config they "
        "were written with: `sample_logits_vllm` saves it as `compression_config.yaml` beside "
        'the parquet files. Give it with `config = "compression_config.yaml"` (relative to '
        "the recipe). It must be a map holding `d`, `k` and `exact_k`, and may hold "
        "`exact_dtype`, `polynomial_terms`, `term_dtype`, `residual_bins`, `delta_encoding` "
        "and `normalize_t` (DistillKit's defaults otherwise), as DistillKit writes them.",
    ),
    (
        "KD0334",
        "the captured teacher's vocabulary is not the student's",
        "Token-level losses compare the teacher's and the student's probabilities of the same "
        "token ids, so the captured logits must come from a teacher with the student's "
        "vocabulary. The vocabulary size the dataset declares (`vocab_size = N`), or the largest "
        "token id a local parquet file's statistics show, does not fit the student's (its "
        "config.json): distill from logits of a teacher of the same family, "
        "or use sequence-level KD (`loss sft`) on the text.",
    ),
]
