"""The lists the diagnostics' explanations give, read from the IR's registries.

``kdlang explain`` and ``docs/diagnostics.md`` fill each explanation's placeholders
(:mod:`kdlang.syntax.codes`) with these, so that the operators, sources and losses a message
lists are always those the language has:

    python -m kdlang.ir.vocabulary > docs/diagnostics.md
"""

from __future__ import annotations

from kdlang.ir.losses import LOSSES
from kdlang.ir.sources import DATASET_KINDS, MODEL_KINDS
from kdlang.ir.stages import STAGE_OPERATORS


def _listed(names, form: str = "`{}`") -> str:
    shown = [form.format(name) for name in names]
    return ", ".join(shown)


def words() -> dict[str, str]:
    """Placeholder -> its text, for ``str.format_map`` of an explanation."""
    topk = [n for n, cls in LOSSES.items() if cls.accepts_topk]
    return {
        "stage_operators": _listed(STAGE_OPERATORS),
        "model_kinds": _listed(MODEL_KINDS, "`{}(...)`"),
        "dataset_kinds": _listed(DATASET_KINDS, "`{}(...)`"),
        "losses": _listed(LOSSES),
        "token_losses": _listed(n for n, cls in LOSSES.items() if cls.teacher == "logits"),
        "hidden_losses": _listed(n for n, cls in LOSSES.items() if cls.teacher == "hidden"),
        "topk_losses": _listed(topk) + " (jsd with beta below 1, skew_rkl with alpha above 0)",
        "topk_infinite": _listed(
            n for n, cls in LOSSES.items() if cls.teacher == "logits" and not cls.accepts_topk
        )
        + ", `jsd` with beta = 1 and `skew_rkl` with alpha = 0",
    }


if __name__ == "__main__":
    from kdlang.syntax.codes import markdown

    print(markdown(words()), end="")
