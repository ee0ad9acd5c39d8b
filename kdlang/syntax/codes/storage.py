"""Diagnostic codes KD0340-KD0344 (compact top-k storage) and KD0345-KD0349 (loss conventions)."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0345",
        "`infinite_logits` has no effect on this loss",
        "`infinite_logits = zero` drops the terms p_T·log p_S where a student logit is -inf and "
        "the teacher has mass, which only `forward_kl` and `teacher_ce` weigh by the teacher's "
        "probability (torchtune's ForwardKLLoss masks them). The other divergences stay finite "
        "there, so the setting would change nothing: remove it, or use it on `forward_kl` or "
        "`teacher_ce`.",
    ),
    (
        "KD0346",
        "`infinite_logits` needs materialized logits",
        "`loss_path = fused_linear` computes the student's logits from its hidden states inside "
        "the fused kernel, which neither sees nor masks an infinite logit. Use `loss_path = "
        "materialized` (or `auto`) with `infinite_logits = zero`, or remove the setting.",
    ),
]
