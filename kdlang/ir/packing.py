"""Train settings of how rows are laid out in micro-batches (padding-free packing, token budgets).

:class:`PackingSettings` is one of the bases of :class:`kdlang.ir.training.Train`: its fields are
settings of a ``train`` block like any other (documented, lowered and fingerprinted with them).

``packing`` concatenates a micro-batch's rows into one sequence (position ids restarting at each
row, attention kept within each row) instead of right-padding them to the longest;
``tokens_per_micro_batch`` splits a step's rows by a token budget instead of ``grad_accum``'s
count. Neither changes what a step minimises: every loss keeps its per-row targets, teacher
positions and denominators.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from kdlang.ir.values import Symbol


def switch(value: Any) -> Any:
    """``true``/``false`` as the words ``auto`` sits beside."""
    return {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else value


class PackingSettings(BaseModel):
    """Settings of how rows are laid out in micro-batches."""

    packing: Annotated[Literal["auto", "true", "false"], Symbol, BeforeValidator(switch)] = Field(
        "auto",
        description="Concatenate a micro-batch's rows into one sequence (position ids restart at "
        "each row, attention stays within it) instead of padding them: `auto` packs when the "
        "student (and the online teacher) keep packed rows apart and attend with flash_attention_2/3 "
        "or flex_attention (no dense mask), `true` wherever they keep rows apart, `false` pads.",
    )
    tokens_per_micro_batch: int | None = Field(
        None,
        ge=8,
        description="Token budget of one micro-batch (a step's rows are split by it instead of "
        "by `grad_accum`; a row longer than the budget gets a micro-batch of its own). Packed: the "
        "rows' tokens; padded: rows x the longest. Default: ceil(batch / grad_accum) x max_length.",
    )

    @classmethod
    def problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of these settings a train gives (as
        :meth:`kdlang.ir.descriptor.Operator.setting_problems` reports it)."""
        if "tokens_per_micro_batch" in given and "grad_accum" in given:
            return [
                (
                    "KD0370",
                    "`grad_accum` and `tokens_per_micro_batch` both say how a step is split "
                    "into micro-batches",
                    "grad_accum",
                    "keep one: `tokens_per_micro_batch` splits by a token budget, "
                    "`grad_accum` into a count of micro-batches",
                )
            ]
        return []
