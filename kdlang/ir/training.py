"""IR of learning and measuring: ``train`` blocks and their ``loss`` lines, ``eval``, ``export``."""

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kdlang.ir.expr import Expr
from kdlang.ir.values import (
    ColumnName,
    LRSchedule,
    LRScheduleField,
    Node,
    RefField,
    Symbol,
    lowered,
    scheduled_within,
)

NonNegative = scheduled_within(ge=0.0)
Positive = scheduled_within(gt=0.0)
Fraction = scheduled_within(ge=0.0, le=1.0)

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl", "skew_rkl")
"""Token-level divergences between softened teacher and student distributions (DESIGN.md)."""


class LossBase(Node):
    syntax_fields: ClassVar[dict[str, str]] = {
        "weight": "`weight W` after the loss's name and options"
    }

    weight: NonNegative = Field(description="Multiplier of the term; a number or a schedule.")


class SFTLoss(LossBase):
    """``loss sft weight W``: cross-entropy on the target tokens (sequence-level KD)."""

    name: Literal["sft"] = "sft"


class DivergenceLoss(LossBase):
    """``loss forward_kl|reverse_kl|tvd weight W [temperature T]``: token-level KD against the
    teacher's distribution (online or cached). :class:`JSDLoss` and :class:`SkewLoss` add the
    option of their kind; no kind accepts another's."""

    name: Literal["forward_kl", "reverse_kl", "tvd"]
    temperature: Positive = Field(1.0, description="Softening temperature of both distributions.")
    temperature_scale: bool = Field(False, description="Multiply by T^2 (Hinton's convention).")


class JSDLoss(DivergenceLoss):
    """``loss jsd(beta = B) weight W [temperature T]``: the generalized Jensen-Shannon
    divergence of GKD."""

    name: Literal["jsd"] = "jsd"  # type: ignore[assignment]
    beta: Fraction = Field(0.5, description="Mixture weight; 0 = forward KL, 1 = reverse KL.")


class SkewLoss(DivergenceLoss):
    """``loss skew_kl|skew_rkl(alpha = A) weight W [temperature T]``: DistiLLM's skew KL and
    skew reverse KL."""

    name: Literal["skew_kl", "skew_rkl"]  # type: ignore[assignment]
    alpha: Fraction = Field(0.1, description="Skew of the mixture.")


class HiddenLoss(LossBase):
    """``loss hidden_mse|hidden_cosine(layers = [[s, t], ...]) weight W``: match hidden states of
    chosen student/teacher layers, through a learned linear projection when widths differ."""

    name: Literal["hidden_mse", "hidden_cosine"]
    layers: list[Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        min_length=1, description="Pairs [student_layer, teacher_layer] whose states are matched."
    )


class DPOLoss(LossBase):
    """``loss dpo(beta = 0.1) weight W``: direct preference optimisation on chosen/rejected pairs,
    the reference model being the initial student."""

    name: Literal["dpo"] = "dpo"
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference.")


LOSSES: dict[str, type[LossBase]] = {
    "sft": SFTLoss,
    **dict.fromkeys(("forward_kl", "reverse_kl", "tvd"), DivergenceLoss),
    "jsd": JSDLoss,
    **dict.fromkeys(("skew_kl", "skew_rkl"), SkewLoss),
    "hidden_mse": HiddenLoss,
    "hidden_cosine": HiddenLoss,
    "dpo": DPOLoss,
}

Loss = lowered(LossBase)
"""Any loss term (the class its ``loss`` line names)."""


class Train(Node):
    """``train NAME { ... }``: the student learns from ``data`` with the listed losses."""

    syntax_fields: ClassVar[dict[str, str]] = {"losses": "its `loss NAME weight W` lines"}

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
    target: ColumnName = Field("output", description="Column holding the text the student learns.")
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
    max_new_tokens: int = Field(128, ge=1, description="Longest on-policy student sample.")
    loss_path: Annotated[Literal["auto", "materialized", "fused_linear"], Symbol] = Field(
        "auto",
        description="How token-level losses get logits: auto picks fused_linear when N x V logits would be large.",
    )
    precision: Annotated[Literal["auto", "fp32", "bf16"], Symbol] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 on CPU."
    )
    compile: bool = Field(False, description="torch.compile the student.")
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


class Metric(Node):
    """``metric [NAME =] EXPR``: a per-row expression averaged over the dataset."""

    name: str
    expr: Expr


class Evaluate(Node):
    """``eval NAME = evaluate(model_or_train, dataset) { prompt = .. metric ... }``.

    The model generates for each row (the column ``output`` holds its text) and every metric is
    averaged. ``perplexity(target_column)`` is a metric computed by scoring instead.
    """

    syntax_fields: ClassVar[dict[str, str]] = {"metrics": "its `metric EXPR` lines"}

    op: Literal["evaluate"] = "evaluate"
    model: RefField = Field(description="A `train` (its student after training) or a `model`.")
    data: RefField = Field(description="The dataset evaluated on.")
    prompt: RefField = Field(description="The prompt the model answers.")
    metrics: list[Metric] = Field(min_length=1)
    temperature: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Sampling temperature; 0 = greedy."
    )
    max_tokens: int = Field(128, ge=1, description="Most new tokens per answer.")
    limit: int | None = Field(None, ge=1, description="Evaluate on the first N rows only.")


class Export(Node):
    """``export TRAIN to "path" { ... }``: ``save_pretrained`` of the trained student + tokenizer
    and a model card generated from the recipe."""

    syntax_fields: ClassVar[dict[str, str]] = {
        "train": '`export TRAIN to "PATH"`',
        "path": '`export TRAIN to "PATH"`',
    }

    kind: Literal["export"] = "export"
    train: RefField
    path: str
    merge_lora: bool = Field(
        True, description="Merge LoRA adapters into the weights (else save the adapter)."
    )
    card: bool = Field(True, description="Write README.md (model card) next to the weights.")
