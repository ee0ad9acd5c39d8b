"""IR of a dataset's captured teacher logits: ``logits = topk(layout = ..., temperature = ...)``.

A dataset whose rows hold a teacher's top-k log-probs is a teacher for token-level losses. The
declaration names the layout the rows were written in (kdlang's own, axolotl's prepared KD
datasets, vLLM ``prompt_logprobs``, DistillKit's compressed form), the temperature they were
captured at, and, where the data names them otherwise, the columns. Each layout has its columns
by role (:data:`LAYOUTS`); a role a layout has not is no setting of it (the checker says so).
"""

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kdlang.ir.values import ColumnName, Node, Symbol

Layout = Literal["kdlang", "axolotl", "prompt_logprobs", "distillkit"]

ROLES = ("ids", "logprobs", "mask", "tokens")
"""The column settings of ``topk(...)``: what each column of a layout holds."""

LAYOUTS: dict[str, dict[str, str]] = {
    "kdlang": {"ids": "topk_ids", "logprobs": "topk_logprobs"},
    "axolotl": {
        "ids": "target_token_ids",
        "logprobs": "target_logprobs",
        "mask": "target_mask",
        "tokens": "input_ids",
    },
    "prompt_logprobs": {"logprobs": "prompt_logprobs", "tokens": "input_ids"},
    "distillkit": {
        "ids": "bytepacked_indices",
        "logprobs": "compressed_logprobs",
        "tokens": "input_ids",
    },
}
"""Each layout's default column for every role it has."""

COLUMN_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "kdlang": {"ids": ("list",), "logprobs": ("list",)},
    "axolotl": {"ids": ("list",), "logprobs": ("list",), "mask": ("list",), "tokens": ("list",)},
    "prompt_logprobs": {"logprobs": ("list", "str"), "tokens": ("list",)},
    "distillkit": {"ids": ("list",), "logprobs": ("list",), "tokens": ("list",)},
}
"""The column types (as the checker names them) each role accepts, by layout."""


class CapturedLogits(Node):
    """``topk(layout = axolotl, temperature = 1.0)``: the rows hold a teacher's top-k log-probs
    in ``layout``, captured at ``temperature``; a train on the dataset needs no teacher."""

    kind: Literal["topk"] = "topk"
    roles: ClassVar[tuple[str, ...]] = ROLES

    layout: Annotated[Layout, Symbol] = Field(
        "kdlang",
        description="How the rows hold the log-probs: kdlang (a teacher_logits stage's "
        "topk_ids/topk_logprobs per target token), axolotl (per-position target_token_ids, "
        "target_logprobs, target_mask beside input_ids), prompt_logprobs (vLLM's per-position "
        "map of token id to log-prob, the first position null, beside input_ids), distillkit "
        "(DistillKit's compressed_logprobs and bytepacked_indices beside input_ids).",
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="The temperature the log-probs were captured at; a loss at temperature T "
        "re-tempers them to p^(temperature / T).",
    )
    ids: ColumnName | None = Field(
        None,
        description="Column of the top-k token ids (default: the layout's; not in "
        "prompt_logprobs, whose maps hold the ids).",
    )
    logprobs: ColumnName | None = Field(
        None, description="Column of the top-k log-probs (default: the layout's)."
    )
    mask: ColumnName | None = Field(
        None, description="Column of axolotl's per-position mask (default: target_mask)."
    )
    tokens: ColumnName | None = Field(
        None,
        description="Column of the token ids the teacher scored (default: input_ids; not in "
        "the kdlang layout), compared with the student's tokens of each row.",
    )
    config: str | None = Field(
        None,
        description="DistillKit's compression_config.yaml, written beside its logits (a path "
        "relative to the recipe); distillkit only, and needed there.",
    )
    vocab_size: int | None = Field(
        None,
        ge=1,
        description="The teacher's vocabulary size, checked against the student's config.",
    )
    tokenizer: str | None = Field(
        None,
        description="The teacher's tokenizer (a local folder, relative to the recipe, or a hub "
        "id), compared with the student's: by `kdlang check` when both are local, else when "
        "the train starts.",
    )

    def column(self, role: str) -> str | None:
        """The column holding ``role`` (a setting, else the layout's default); None when the
        layout has no such column."""
        given = getattr(self, role)
        default = LAYOUTS[self.layout].get(role)
        return given if given is not None and default is not None else default

    def columns(self) -> dict[str, str]:
        """Every role of the layout with its column."""
        return {role: name for role in ROLES if (name := self.column(role)) is not None}
