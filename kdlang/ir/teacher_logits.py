"""IR of ``teacher_logits(data)``: the stage that caches a white-box teacher's top-k log-probs
for offline logit distillation. Registered in :data:`kdlang.ir.stages.STAGE_OPERATORS` by being
defined (the recipe imports this module)."""

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kdlang.ir.descriptor import DATA, Columns, Estimate, PromptUse, References
from kdlang.ir.stages import MODELS, PROMPTS, StageOperator
from kdlang.ir.values import ColumnName, RefField, Symbol

TOPK_COLUMNS = {"topk_ids": "list", "topk_logprobs": "list", "topk_target_ids": "list"}
"""Columns a ``teacher_logits`` stage adds (per target token: ids and log-probs)."""
TOPK_BYTES_PER_ENTRY = 4 + 2
"""Cached bytes per top-k entry: an int32 id and a float16 log-prob."""


class TeacherLogitsStage(StageOperator):
    """``teacher_logits(data)``: caches the teacher's top-k next-token log-probs on every target
    token (prompt + target), so training can run without the teacher (offline logit KD). A
    conversation target is scored on the tokens ``train_on`` picks of its rendered chat
    template."""

    references: ClassVar[References] = {"input": DATA, "teacher": MODELS, "prompt": PROMPTS}
    prompts = (PromptUse("prompt"),)
    text_column_settings = ("target",)
    conversation_settings: ClassVar[tuple[str, ...]] = ("target",)
    """Text settings that may name a conversation column instead (its chat template renders
    it)."""

    op: Literal["teacher_logits"] = "teacher_logits"
    teacher: RefField = Field(description="The white-box model scored (an `hf` model).")
    prompt: RefField | None = Field(
        None,
        description="The prompt the target text follows (a conversation target takes none).",
    )
    target: ColumnName = Field(
        description="Column holding the text the student will learn, or a conversation "
        "(`messages`) scored on the turns `train_on` picks."
    )
    train_on: Annotated[Literal["assistant", "last_assistant", "all"], Symbol] = Field(
        "assistant",
        description="Of a conversation target, the tokens scored: every assistant turn, the "
        "last one, or the whole rendered conversation (a train reading the cache learns these "
        "or fewer).",
    )
    top_k: int = Field(32, ge=1, description="Log-probs kept per token.")
    max_length: int = Field(1024, ge=1, description="Longest prompt + target, in tokens.")

    def output_columns(self, columns: Columns) -> Columns:
        return {**columns, **TOPK_COLUMNS}

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if rows is None:
            return Estimate(rows_upper_bound=upper)
        return Estimate(
            rows=rows,
            rows_upper_bound=upper,
            teacher_calls=rows,
            logit_storage_bytes=rows * self.max_length * self.top_k * TOPK_BYTES_PER_ENTRY,
        )
