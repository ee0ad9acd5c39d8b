"""Diagnostic codes KD0323-KD0329 (evaluation during training, adaptive off-policy, sequence-level KD)."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0323",
        "eval_every without dev rows",
        "`eval_every = N` evaluates the train's objective on dev rows every N steps, but the "
        "train names no `eval_data`. Name a dataset or stage with the train's columns "
        "(`eval_data = dev`), or remove `eval_every`.",
    ),
    (
        "KD0324",
        "dev rows nothing evaluates on",
        "`eval_data` names dev rows, but the train says nothing about when to evaluate on them, "
        "so they would go unused. Give `eval_every = N` (optimizer steps; the last step is "
        "evaluated too), or remove `eval_data`.",
    ),
    (
        "KD0325",
        "adaptive schedule without evaluation",
        "`replay = adaptive(...)` (DistiLLM's adaptive off-policy schedule) raises the share of "
        "student samples when the dev loss rises, so it needs evaluation during training: give "
        "`eval_data = DATASET` and `eval_every = N`.",
    ),
    (
        "KD0326",
        "adaptive schedule and on_policy together",
        "`replay = adaptive(...)` decides at every step whether the batch is fresh student "
        "samples, replayed ones or the data's targets; `on_policy` (GKD's λ) would decide the "
        "same thing a second time. Give one of the two.",
    ),
    (
        "KD0327",
        "dev rows without the train's columns",
        "The train's objective is computed on `eval_data` as on its training rows, so the dev "
        "rows need every column the train reads: the target, the prompt's variables, the "
        "chosen/rejected columns of pair losses and, for a train learning from a cached "
        "teacher, the cached log-probs (make the dev rows with a `teacher_logits` stage too).",
    ),
    (
        "KD0328",
        "seq_kd without an online teacher",
        "`seq_kd = true` has the online teacher write the targets of off-policy batches as it "
        "trains, so the train needs a white-box `teacher = MODEL` (an `hf` model with the "
        "student's vocabulary).",
    ),
    (
        "KD0329",
        "replay buffer smaller than a batch",
        "A replayed batch draws `batch` samples from the replay buffer, which holds at most "
        "`capacity` of them: a capacity below the batch could never fill a batch. Give "
        "`capacity` of at least `batch`.",
    ),
]
