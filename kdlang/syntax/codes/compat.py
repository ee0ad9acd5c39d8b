"""Diagnostic codes KD03xx: compatibility between models, data and losses."""

TABLE = [
    (
        "KD0301",
        "token-level loss needs a white-box teacher",
        "Token-level losses ({token_losses}) and hidden-state losses ({hidden_losses}) compare the student's distribution with the teacher's, so the "
        "teacher's logits must be available: an `hf(...)` model, or cached top-k log-probs from a "
        "`teacher_logits` stage. A black-box (`openai`) teacher supports sequence-level KD: train "
        "with `loss sft` on its text, or cache its top-k log-probs where the server returns them.",
    ),
    (
        "KD0302",
        "vocabulary mismatch",
        "Token-level losses compare distributions position by position over the same vocabulary; "
        "the teacher's and the student's tokenizers differ. Use a teacher and student of one "
        "family, or sequence-level KD (`loss sft` on teacher text).",
    ),
    (
        "KD0303",
        "on-policy distillation needs a generator",
        "`on_policy > 0` samples targets from the student during training and needs a token-level "
        "loss against an online white-box teacher (the `teacher` setting of the train block).",
    ),
    (
        "KD0304",
        "dpo needs preference pairs",
        "`loss dpo` trains on chosen/rejected pairs: its data must come from a `pairs` stage (or "
        "a dataset with `prompt`, `chosen` and `rejected` columns).",
    ),
    (
        "KD0305",
        "schedule leaves the valid range",
        "A scheduled value (weight, temperature, beta, alpha, on_policy ...) takes, somewhere "
        "during training, a value its setting does not allow, e.g. a beta schedule going past 1.",
    ),
    (
        "KD0306",
        "hidden-state loss needs layers",
        "`hidden_mse` and `hidden_cosine` compare hidden states of chosen layers: give "
        "`layers = [[student_layer, teacher_layer], ...]` and an online `hf` teacher.",
    ),
    (
        "KD0307",
        "top-k cache incompatible with the loss",
        "A cached top-k teacher distribution puts no mass outside its k ids, so a loss that "
        "weighs the student's mass there would be infinite: {topk_infinite}. Use one of "
        "{topk_losses} with cached logits, or an online teacher.",
    ),
    (
        "KD0320",
        "topk_mass without a top-k teacher",
        "`topk_mass` says what to do with the probability a cached top-k teacher misses (the mass "
        "outside its k ids): `renormalize` it over the k ids, `keep` it missing, or count it as "
        "one more outcome `uniform`ly spread for both models. An online teacher's distribution "
        "misses no mass, so the setting would do nothing: remove it, or train on a "
        "`teacher_logits` stage's cache.",
    ),
    (
        "KD0321",
        "topk_entries reduction without a top-k teacher",
        "`reduction = topk_entries` divides a divergence by the number of cached teacher entries "
        "(positions times k), as axolotl's top-k loss does; an online teacher has no k. Use "
        "`reduction = token_mean`, or train on a `teacher_logits` stage's cache.",
    ),
    (
        "KD0322",
        "on-policy sampling settings without on-policy steps",
        "`sample_temperature`, `sample_top_p` and `max_new_tokens` shape the samples the student "
        "writes on on-policy steps (GKD's λ); a train without `on_policy` has none, so they "
        "would change nothing. Give `on_policy` (a fraction or a schedule), or remove them.",
    ),
]
