"""IR of ``teacher_logits(data)``: the stage that caches a white-box teacher's top-k log-probs
for offline logit distillation. Registered in :data:`kdlang.ir.stages.STAGE_OPERATORS` by being
defined (the recipe imports this module)."""

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from kdlang.ir.descriptor import DATA, Columns, Estimate, PromptUse, References
from kdlang.ir.stages import MODELS, PROMPTS, StageOperator
from kdlang.ir.values import VALUE_CONFIG, CallValue, ColumnName, Ref, RefField, Symbol

TOPK_COLUMNS = {"topk_ids": "list", "topk_logprobs": "list", "topk_target_ids": "list"}
"""Columns a ``teacher_logits`` stage adds (per target token: ids and log-probs)."""
TOPK_BYTES_PER_ENTRY = 4 + 2
"""Cached bytes per top-k entry: an int32 id and a float16 log-prob."""
STORAGE_KINDS = ("fp16", "fp32", "compressed")


class TopKStorage(BaseModel):
    """How a position's k entries are stored: ``fp16`` (int32 ids, float16 log-probs: 6 bytes
    an entry), ``fp32`` (int32 ids, float32 log-probs: 8 bytes) or ``compressed(exact = 8,
    bits = 8)``: ids packed at the bits the vocabulary needs, the first ``exact`` log-probs as
    float16, the others as ``bits``-bit steps below the ``exact``-th on a per-position scale."""

    model_config = VALUE_CONFIG

    kind: Literal["fp16", "fp32", "compressed"]
    exact: int = Field(8, ge=1, description="Log-probs kept exactly (float16).")
    bits: int = Field(8, ge=2, le=16, description="Bits of each other log-prob.")

    def __repr__(self) -> str:
        if self.kind != "compressed":
            return self.kind
        return f"compressed(exact = {self.exact}, bits = {self.bits})"

    def position_bytes(self, k: int, vocab: int | None = None) -> int:
        """Bytes a position takes (ids at 32 bits where the vocabulary is not known)."""
        if self.kind == "fp16":
            return k * TOPK_BYTES_PER_ENTRY
        if self.kind == "fp32":
            return k * 8
        id_bits = max(1, (vocab - 1).bit_length()) if vocab else 32
        tail = k - self.exact
        return math.ceil(k * id_bits / 8) + 2 * self.exact + 2 + math.ceil(tail * self.bits / 8)


def _storage(value: Any) -> Any:
    if isinstance(value, Ref):
        value = CallValue(name=value.name, span=value.span)
    if not isinstance(value, CallValue):
        return value
    if value.name not in STORAGE_KINDS:
        raise PydanticCustomError(
            "kd_storage",
            "unknown storage `{name}`; use fp16, fp32 or compressed(exact = 8, bits = 8)",
            {"name": value.name},
        )
    if value.args:
        raise PydanticCustomError(
            "kd_storage", "storage takes keywords only: compressed(exact = 8, bits = 8)", {}
        )
    if value.kwargs and value.name != "compressed":
        raise PydanticCustomError("kd_storage", "`{name}` takes no settings", {"name": value.name})
    unknown = sorted(set(value.kwargs) - {"exact", "bits"})
    if unknown:
        raise PydanticCustomError(
            "kd_storage",
            "compressed storage has no setting `{name}`; it takes exact and bits",
            {"name": unknown[0]},
        )
    return {"kind": value.name, **value.kwargs}


StorageField = Annotated[TopKStorage, BeforeValidator(_storage)]


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
    storage: StorageField = Field(
        TopKStorage.model_construct(kind="fp16"),
        description="How the top-k is stored: fp16 (6 bytes an entry), fp32 (8) or "
        "compressed(exact = 8, bits = 8): the first `exact` log-probs as float16, the rest in "
        "`bits` bits each, ids packed to the vocabulary's width.",
    )
    shard_rows: int = Field(
        4096,
        ge=1,
        description="Rows per file of the cached output; each file is committed as it "
        "completes, so a killed run resumes at the first file not written.",
    )

    @field_validator("storage")
    @classmethod
    def _exact_below_k(cls, storage: TopKStorage, info: ValidationInfo) -> TopKStorage:
        k = info.data.get("top_k")
        if storage.kind == "compressed" and isinstance(k, int) and storage.exact >= k:
            raise PydanticCustomError(
                "kd_range",
                "compressed storage keeps `exact = {exact}` of `top_k = {k}` log-probs exactly, "
                "which leaves none to compress; give exact < top_k, or `storage = fp16`",
                {"exact": storage.exact, "k": k},
            )
        return storage

    def output_columns(self, columns: Columns) -> Columns:
        return {**columns, **TOPK_COLUMNS}

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if rows is None:
            return Estimate(rows_upper_bound=upper)
        return Estimate(
            rows=rows,
            rows_upper_bound=upper,
            teacher_calls=rows,
            logit_storage_bytes=rows
            * self.max_length
            * self.storage.position_bytes(self.top_k, vocab),
        )
