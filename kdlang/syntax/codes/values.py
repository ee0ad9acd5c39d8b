"""Diagnostic codes KD01xx: structure and values (lowering a syntax tree to the IR)."""

TABLE = [
    (
        "KD0101",
        "unknown operator",
        "A stage or eval names an operator kdlang does not have. Stage operators: "
        "{stage_operators}; eval operator: `evaluate`. `docs/language.md` describes each.",
    ),
    (
        "KD0102",
        "unknown setting",
        "A block (or a call's keyword arguments) sets a field the declaration does not have. The "
        "help line suggests the closest known field; `docs/language.md` lists every field.",
    ),
    (
        "KD0103",
        "wrong value type",
        "A setting's value has the wrong type: for instance a string where a number is "
        "expected, a number where a model reference is expected, or a list of the wrong items.",
    ),
    (
        "KD0104",
        "value out of range",
        "A setting's value is outside what it may take: negative epochs, temperature <= 0, "
        "beta or alpha outside [0, 1], top_k < 1, a probability above 1, ...",
    ),
    (
        "KD0105",
        "missing required setting",
        "A declaration lacks a setting it cannot do without, such as `teacher` in a `label` "
        "stage or `student` and `data` in a `train` block.",
    ),
    (
        "KD0106",
        "duplicate setting",
        "The same setting is given twice in one block or call; the second would silently win. "
        "Keep one.",
    ),
    (
        "KD0107",
        "unknown source kind",
        "A model or dataset is created by a function kdlang does not know. Models: "
        "{model_kinds}. Datasets: {dataset_kinds}.",
    ),
    (
        "KD0108",
        "unknown loss",
        "A `loss` line names a loss kdlang does not have. Losses: {losses}.",
    ),
    (
        "KD0109",
        "statement not allowed here",
        "`loss` lines belong in `train` blocks, `keep`/`dedup`/`decontaminate` in `filter` "
        "stages and `metric` lines in `eval` blocks.",
    ),
    (
        "KD0110",
        "invalid schedule",
        "A schedule must be one of `constant(v)`, `linear(a -> b, over = N% | steps)`, "
        "`cosine(a -> b, over = ...)`, `step(a -> b, at = N% | steps)`, `warmup(v, over = ...)`; "
        "learning-rate schedules are `constant`, `linear(warmup = ...)` and `cosine(warmup = ...)`.",
    ),
    ("KD0111", "duplicate recipe header", 'A file has at most one `recipe "name" { ... }` header.'),
    (
        "KD0112",
        "wrong operator arguments",
        "An operator call has the wrong positional arguments: each stage operator takes its input "
        "stage or dataset as its one positional argument (`label(problems)`), `evaluate` takes "
        "the trained model and the dataset (`evaluate(distill, heldout)`).",
    ),
]
