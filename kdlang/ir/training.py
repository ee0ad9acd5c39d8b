"""IR of learning and measuring: ``train`` blocks, ``eval``, ``export``.

The ``loss`` lines of a train are :mod:`kdlang.ir.losses`.
"""

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from kdlang.ir.descriptor import DATA, Columns, Estimate, Operator, PromptUse, References
from kdlang.ir.evaluation import EvaluationSettings
from kdlang.ir.expr import Expr
from kdlang.ir.losses import Fraction, Loss
from kdlang.ir.minillm import MiniLLMSettings
from kdlang.ir.packing import PackingSettings, switch
from kdlang.ir.tracking import Destination, HubRepo, TrackingSettings
from kdlang.ir.values import (
    ColumnName,
    LRSchedule,
    LRScheduleField,
    Node,
    RefField,
    SecretStr,
    Symbol,
)

FUSED_LINEAR_THRESHOLD = 2 * 2**30
"""Materialized fp32 logits above this many bytes make ``loss_path = auto`` pick fused_linear."""


class TemplateArgsShare(BaseModel):
    """One entry of a train's ``chat_template_mix``: template arguments and the share of the
    rows rendered with them."""

    model_config = ConfigDict(extra="forbid")

    args: dict[str, Any] = Field(description="Keyword arguments of the chat template.")
    share: float = Field(gt=0, description="Weight of these arguments among the entries.")


class Train(Operator, EvaluationSettings, MiniLLMSettings, TrackingSettings, PackingSettings):
    """``train NAME { ... }``: the student learns from ``data`` with the listed losses."""

    syntax_fields: ClassVar[dict[str, str]] = {"losses": "its `loss NAME weight W` lines"}
    operator: ClassVar[str] = "train"
    section: ClassVar[str] = "trains"
    references: ClassVar[References] = {
        "student": ("models",),
        "teacher": ("models",),
        "data": DATA,
        "prompt": ("prompts",),
        "eval_data": DATA,
        "lm_data": DATA,
    }
    reads: ClassVar[str | None] = "data"
    prompts: ClassVar[tuple[PromptUse, ...]] = (PromptUse("prompt"),)
    conversation_settings: ClassVar[tuple[str, ...]] = ("target",)
    """Text settings that may name a conversation column instead (its chat template renders
    it)."""

    kind: Literal["train"] = "train"
    student: RefField = Field(description="The model trained (an `hf` model).")
    teacher: RefField | None = Field(
        None, description="Online white-box teacher for token-level losses and on-policy sampling."
    )
    data: RefField = Field(
        description="Training rows: a dataset or stage (a `teacher_logits` stage gives cached top-k teacher log-probs)."
    )
    prompt: RefField | None = Field(
        None, description="Template of the input part; its tokens get no loss."
    )
    target: ColumnName = Field(
        "output",
        description="Column holding the text the student learns, or a conversation (`messages`) "
        "whose turns it learns as `train_on` says.",
    )
    train_on: Annotated[Literal["assistant", "last_assistant", "all"], Symbol] = Field(
        "assistant",
        description="Of a conversation target, the tokens learned: every assistant turn, the "
        "last one, or the whole rendered conversation.",
    )
    chat_template_mix: list[TemplateArgsShare] | None = Field(
        None,
        min_length=1,
        description="Chat template arguments picked per row from (seed, row), by share "
        "(`[{args: {enable_thinking: true}, share: 0.3}, {args: {enable_thinking: false}, "
        "share: 0.7}]`), over the student's own `chat_template_args`.",
    )
    losses: list[Loss] = Field(min_length=1)
    epochs: int = Field(
        1, ge=1, description="Passes over the data (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    batch: int = Field(8, ge=1, description="Sequences per optimizer step (after accumulation).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    lr_schedule: LRScheduleField = Field(
        # built unvalidated: validating it here would build a schema whenever the IR is imported
        LRSchedule.model_construct(kind="constant"),
        description="constant, linear(warmup = ..) or cosine(warmup = .., min_ratio = ..).",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: list[float] = Field(
        [0.9, 0.999], min_length=2, max_length=2, description="AdamW [beta1, beta2]."
    )
    clip: float | None = Field(1.0, gt=0, description="Gradient-norm clipping; null disables.")
    max_length: int = Field(
        512, ge=8, description="Longest prompt + target in tokens (longer rows are truncated)."
    )
    on_policy: Fraction = Field(
        0.0, description="GKD λ: probability that a batch's targets are sampled from the student."
    )
    sample_temperature: float = Field(
        1.0, gt=0, description="Temperature of on-policy student samples."
    )
    sample_top_p: float = Field(
        1.0, gt=0, le=1, description="Nucleus mass of on-policy student samples (1: all)."
    )
    sample_top_k: int = Field(
        0,
        ge=0,
        description="Top-k of on-policy student samples: only the K most likely tokens (0: all), "
        "before sample_top_p.",
    )
    max_new_tokens: int = Field(128, ge=1, description="Longest on-policy student sample.")

    @classmethod
    def setting_problems(cls, given: frozenset[str]) -> list[tuple]:
        mixed = [
            problem
            for settings in (EvaluationSettings, MiniLLMSettings, TrackingSettings, PackingSettings)
            for problem in settings.problems(given)
        ]
        if given & {"on_policy", "replay", "seq_kd"}:  # samples from the student or teacher
            return mixed
        return mixed + [
            (
                "KD0322",
                f"`{setting}` shapes the student's on-policy samples, but this train "
                "samples none (`on_policy` is 0)",
                setting,
                "give `on_policy = 0.5` (or a schedule), or remove the setting",
            )
            for setting in ("sample_temperature", "sample_top_p", "sample_top_k", "max_new_tokens")
            if setting in given
        ]

    loss_path: Annotated[Literal["auto", "materialized", "fused_linear"], Symbol] = Field(
        "auto",
        description="How token-level losses get logits: auto picks fused_linear when N x V logits would be large.",
    )
    precision: Annotated[Literal["auto", "fp32", "bf16"], Symbol] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 on CPU."
    )
    compile: Annotated[Literal["auto", "true", "false"], Symbol, BeforeValidator(switch)] = Field(
        "auto",
        description="Compile each decoder layer of the student and the online teacher "
        "(torch.compile, one region per layer): `auto` does on CUDA, `true` also on CPU.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute the student's decoder layers in the backward pass instead of keeping their activations: less memory, more time.",
    )
    strategy: Annotated[Literal["ddp", "fsdp"], Symbol] = Field(
        "ddp",
        description="Under several processes: ddp replicates the student, fsdp shards it (FSDP2, a unit per decoder layer); one process ignores it.",
    )
    checkpoint_every: int = Field(200, ge=1, description="Optimizer steps between checkpoints.")
    log_every: int = Field(
        10,
        ge=1,
        description="Optimizer steps between writes of the metrics (metrics.jsonl, TensorBoard) and updates of the progress bar's loss; every step keeps its record, and a checkpoint or the last step writes too.",
    )
    seed: int | None = Field(None, ge=0, description="Training seed; default: the recipe's.")

    def text_settings(self) -> tuple[str, ...]:
        # the target is read only by losses learning from the target tokens, and not at all
        # when every batch samples its targets and the recipe names none (prompt-only rows)
        if self.samples_only() and "target" not in self.spans:
            return ()
        return ("target",) if any(loss.learns_from == "tokens" for loss in self.losses) else ()

    def samples_only(self) -> bool:
        """Whether every batch's targets are sampled from the student (``on_policy = 1``)."""
        return isinstance(self.on_policy, int | float) and self.on_policy >= 1.0

    def steps(self, rows: int | None) -> int | None:
        """Optimizer steps of the run on ``rows`` rows (None when unknown)."""
        if self.max_steps is not None:
            return self.max_steps
        return None if rows is None else self.epochs * max(1, math.ceil(rows / self.batch))

    def micro_tokens(self) -> int:
        """Most token positions of one micro-batch."""
        return math.ceil(self.batch / self.grad_accum) * self.max_length

    def choose_loss_path(self, vocab: int | None) -> tuple[str, str]:
        """``(path, reason)``: how the token-level losses get their logits, for a student of
        ``vocab`` output rows (None: not known yet). ``kdlang plan`` shows this choice and the
        runtime makes it with the loaded student's vocabulary."""
        if not any(loss.teacher == "logits" for loss in self.losses):
            return "materialized", "no token-level divergence"
        if self.loss_path != "auto":
            return self.loss_path, "set in the recipe"
        if vocab is None:
            return "auto", "vocabulary size unknown until the student loads"
        size = self.micro_tokens() * vocab * 4
        if size > FUSED_LINEAR_THRESHOLD:
            return (
                "fused_linear",
                f"{self.micro_tokens()} tokens x V={vocab} fp32 logits = {_gib(size)} per micro-batch",
            )
        return "materialized", f"logits are {_gib(size)} per micro-batch"

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        est = Estimate(rows=rows, rows_upper_bound=upper, train_steps=self.steps(rows))
        if est.train_steps is not None:
            est.train_tokens_max = est.train_steps * self.batch * self.max_length
        if vocab is not None:
            est.logits_bytes = self.micro_tokens() * vocab * 4
        est.loss_path, est.loss_path_reason = self.choose_loss_path(vocab)
        return est


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


class Metric(Node):
    """``metric [NAME =] EXPR``: a per-row expression averaged over the dataset."""

    expressions: ClassVar[dict[str, str]] = {"expr": "metric"}

    name: str
    expr: Expr


class Evaluate(Operator):
    """``eval NAME = evaluate(model_or_train, dataset) { prompt = .. metric ... }``.

    The model generates for each row (the column ``output`` holds its text) and every metric is
    averaged. ``perplexity(target_column)`` is a metric computed by scoring instead.
    """

    syntax_fields: ClassVar[dict[str, str]] = {"metrics": "its `metric EXPR` lines"}
    operator: ClassVar[str] = "evaluate"
    section: ClassVar[str] = "evals"
    references: ClassVar[References] = {
        "model": ("models", "trains"),
        "data": DATA,
        "prompt": ("prompts",),
    }
    reads: ClassVar[str | None] = "data"
    prompts: ClassVar[tuple[PromptUse, ...]] = (PromptUse("prompt"),)
    column_settings: ClassVar[tuple[str, ...]] = ("messages",)

    op: Literal["evaluate"] = "evaluate"
    model: RefField = Field(description="A `train` (its student after training) or a `model`.")
    data: RefField = Field(description="The dataset evaluated on.")
    prompt: RefField | None = Field(
        None, description="The prompt the model answers (unless it answers `messages`)."
    )
    messages: ColumnName | None = Field(
        None,
        description="A conversation column: the model answers each row's conversation up to "
        "its last user turn (an assistant turn after it is not sent).",
    )
    metrics: list[Metric] = Field(min_length=1)
    temperature: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Sampling temperature; 0 = greedy."
    )
    top_k: int = Field(
        0, ge=0, description="With temperature > 0: sample among the K most likely tokens (0: all)."
    )
    max_tokens: int = Field(128, ge=1, description="Most new tokens per answer.")
    limit: int | None = Field(None, ge=1, description="Evaluate on the first N rows only.")

    def scope(self, columns: Columns) -> Columns:
        return {**columns, "output": "str"}  # the model's answer

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if rows is not None and self.limit:
            rows = min(rows, self.limit)
        return Estimate(
            rows=rows,
            rows_upper_bound=upper,
            generations=rows,
            generated_tokens_max=None if rows is None else rows * self.max_tokens,
        )


DATA_FORMATS = {".jsonl": "jsonl", ".parquet": "parquet", ".csv": "csv"}
"""The file extensions a data export writes, and their formats."""


class Export(Operator):
    """``export TRAIN to "path" { ... }``: ``save_pretrained`` of the trained student + tokenizer
    and a model card generated from the recipe; ``export DATA to "rows.jsonl"`` (a dataset or
    a stage): its rows as one file, in the format its extension names (:data:`DATA_FORMATS`)."""

    syntax_fields: ClassVar[dict[str, str]] = {
        "train": '`export NAME to "PATH"`',
        "path": '`export NAME to "PATH"`',
    }
    operator: ClassVar[str] = "export"
    section: ClassVar[str] = "exports"
    references: ClassVar[References] = {"train": ("trains", "stages", "datasets")}
    model_settings: ClassVar[tuple[str, ...]] = ("merge_lora", "card")
    """The settings of a model export (a data export takes none)."""
    code_version: ClassVar[int] = 2  # 2: the marker, and the record of every file's hash
    main_only: ClassVar[bool] = True
    restores: ClassVar[bool] = True

    kind: Literal["export"] = "export"
    train: RefField
    path: Destination
    merge_lora: bool = Field(
        True, description="Merge LoRA adapters into the weights (else save the adapter)."
    )
    card: bool = Field(True, description="Write README.md (model card) next to the weights.")
    private: bool = Field(
        False, description='Of an export to `hub("org/name")`: create the repo private.'
    )
    revision: str | None = Field(
        None,
        min_length=1,
        description='Of an export to `hub("org/name")`: the branch committed to (created from '
        "main when missing; default main).",
    )
    token: SecretStr | None = Field(
        None,
        description='Of an export to `hub("org/name")`: the token, `env("HF_TOKEN")` (default: '
        "huggingface_hub's own, HF_TOKEN or `hf auth login`).",
    )
    license: str | None = Field(
        None,
        min_length=1,
        description="The license named in the card's metadata (`apache-2.0`, `mit`, ...).",
    )
    tags: list[str] = Field(
        [],
        description="Tags added to the card's metadata (after `kdlang`, `knowledge-distillation`).",
    )
    hub_settings: ClassVar[tuple[str, ...]] = ("private", "revision", "token")
    """The settings of an export to the hub (a path export takes none)."""
    card_settings: ClassVar[tuple[str, ...]] = ("license", "tags")
    """The settings of a card: a model export's, or a data export's to the hub."""

    @property
    def hub(self) -> HubRepo | None:
        """The hub repo exported to (None: a path)."""
        return self.path if isinstance(self.path, HubRepo) else None
