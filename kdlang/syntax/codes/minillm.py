"""Diagnostic codes KD0350-KD0359 (MiniLLM)."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0350",
        "minillm needs an online white-box teacher",
        "`loss minillm` scores every token the student samples with the teacher's log-probability "
        "and compares the two next-token distributions at every position of the rollout, so the "
        "train needs `teacher = ...` naming an `hf` model (a cached top-k or an API teacher has no "
        "distribution over the student's samples).",
    ),
    (
        "KD0351",
        "language-modelling setting without lm_data",
        "`lm_weight` and `lm_text` shape MiniLLM's pre-training term, the cross-entropy on a "
        "second dataset; without `lm_data = NAME` there is no such term and the setting would do "
        "nothing. Give `lm_data`, or remove the setting.",
    ),
    (
        "KD0352",
        "MiniLLM setting without loss minillm",
        "`teacher_mix`, `ppo_epochs`, `lm_data`, `lm_weight` and `lm_text` are settings of "
        "MiniLLM's policy-gradient objective; a train without a `loss minillm` line takes no "
        "rollouts and would ignore them. Add `loss minillm weight 1.0`, or remove the setting.",
    ),
    (
        "KD0353",
        "minillm with other losses",
        "A train with `loss minillm` learns from its rollouts alone (its other term is the "
        "language-modelling one on `lm_data`); another `loss` line would have no targets to learn "
        "from on those steps. Remove the other lines, or train them in a train of their own.",
    ),
    (
        "KD0354",
        "minillm with both parts off",
        "`loss minillm` is the sum of its long-term part (`long_term`, the clipped policy "
        "gradient) and its single-step part (`single_step`, the per-token reverse KL); with both "
        "false the term is zero and trains nothing. Keep at least one of them.",
    ),
    (
        "KD0355",
        "minillm draws every batch itself",
        "MiniLLM learns on its own rollouts at every step, one per prompt: its train says so "
        "with `on_policy = 1` (a constant; `sample_temperature` and `max_new_tokens` then shape "
        "the rollouts). A smaller or scheduled `on_policy`, `seq_kd`, `replay` or "
        "`num_generations` above 1 would mix in batches of another kind, which the objective "
        "does not have.",
    ),
    (
        "KD0356",
        "minillm rollouts cannot be truncated",
        "The importance ratios and weights of `loss minillm` are those of the models' full "
        "distributions at `sample_temperature`; a nucleus (`sample_top_p` below 1) or a top-k "
        "(`sample_top_k` above 0) would sample from another distribution than the one the "
        "ratios describe. Remove the setting.",
    ),
    (
        "KD0357",
        "lm_data is not text",
        "`lm_data` names the rows of the language-modelling term (a dataset or a stage); their "
        "column `lm_text` (default `text`) holds the text the student keeps modelling, and "
        "the rows must have it.",
    ),
    (
        "KD0358",
        "minillm under fsdp",
        "MiniLLM's rollouts are sampled token by token from the whole student on each process; a "
        "student sharded by `strategy = fsdp` is not supported yet. Use `strategy = ddp` (each "
        "process holds the student), or one process.",
    ),
    (
        "KD0359",
        "minillm option without its part",
        "`gamma`, `clip_eps`, `advantage`, `length_norm` and `whiten` shape the long-term part of "
        "`loss minillm`; with `long_term = false` there is no such part and the option would do "
        "nothing. Remove it, or keep the long-term part.",
    ),
]
