"""IR of the ``loss`` lines of a ``train`` block: one class per loss, named by its DSL word.

Each loss is its own descriptor: what it learns from (the target tokens or chosen/rejected
pairs), what of the teacher it needs (its distribution, its hidden states), whether a cached
top-k teacher (a ``teacher_logits`` stage) is enough, whether it counts on an on-policy step,
the entry kind of the divergence kernels it is computed with, and its own typed options.
Defining a subclass of :class:`LossBase` with a ``name`` registers it in :data:`LOSSES`. The
runtime dispatches on the descriptor: a divergence is computed by the kernels' entry kind
``kernel_mode`` (``kdlang.runtime.kernels.entries``) against its float64 reference of the
same name (``kdlang.runtime.losses.reference``).
"""

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, InstanceOf, SerializeAsAny

from kdlang.ir.values import Node, Schedule, ScheduleCall, Symbol, at_step, bounds

NonNegative = Annotated[Annotated[float, Field(ge=0.0)] | Schedule, ScheduleCall]
Positive = Annotated[Annotated[float, Field(gt=0.0)] | Schedule, ScheduleCall]
Fraction = Annotated[Annotated[float, Field(ge=0.0, le=1.0)] | Schedule, ScheduleCall]
"""Numbers within bounds, or schedules (whether a schedule stays within them is KD0305)."""

LOSSES: dict[str, type["LossBase"]] = {}
"""Every loss by its DSL word, in definition order."""


class LossBase(Node):
    """Base of every loss; the class variables are its descriptor (module docstring)."""

    syntax_fields: ClassVar[dict[str, str]] = {
        "weight": "`weight W` after the loss's name and options"
    }
    learns_from: ClassVar[Literal["tokens", "pairs"]] = "tokens"
    """``tokens``: the target tokens of each row; ``pairs``: chosen/rejected pairs."""
    pair_columns: ClassVar[tuple[str, ...]] = ()
    """Columns the data must have when the loss learns from pairs."""
    teacher: ClassVar[Literal["logits", "hidden"] | None] = None
    """What of a teacher the loss compares with: its next-token distribution, its hidden states."""
    accepts_topk: ClassVar[bool] = False
    """Whether a cached top-k teacher distribution (``teacher_logits``) is enough."""
    on_policy: ClassVar[bool] = False
    """Whether the loss counts on an on-policy step (the targets being the student's samples)."""
    kernel_mode: ClassVar[str | None] = None
    """The entry kind of the divergence kernels that compute the loss (``runtime/kernels``)."""
    scheduled: ClassVar[tuple[str, ...]] = ("weight",)
    """The settings that may follow a schedule, read at every optimizer step."""

    name: str
    weight: NonNegative = Field(description="Multiplier of the term; a number or a schedule.")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.model_fields["name"].default
        if isinstance(name, str):
            LOSSES[name] = cls

    def at_step(self, step: int, total_steps: int) -> Self:
        """The loss with every scheduled setting replaced by its value at ``step`` (0-based) of
        ``total_steps``: the typed values a step computes the term from, and logs."""
        values = {f: at_step(getattr(self, f), step, total_steps) for f in self.scheduled}
        return self.model_copy(update=values)

    def kernel_options(self) -> dict[str, float]:
        """The options of its kernel entry beyond the temperature (a settled loss's)."""
        return {}

    def finite_against_topk(self) -> bool:
        """Whether the loss stays finite against a cached top-k teacher, which has no mass
        outside its k ids, at every value its options take."""
        return self.accepts_topk


class SFTLoss(LossBase):
    """``loss sft weight W``: cross-entropy on the target tokens (sequence-level KD)."""

    name: Literal["sft"] = "sft"


class DivergenceLoss(LossBase):
    """Token-level KD against the teacher's distribution (online or cached): both distributions
    softened by ``temperature``."""

    teacher = "logits"
    accepts_topk = True
    on_policy = True
    scheduled: ClassVar[tuple[str, ...]] = ("weight", "temperature")

    temperature: Positive = Field(1.0, description="Softening temperature of both distributions.")
    temperature_scale: bool = Field(False, description="Multiply by T^2 (Hinton's convention).")
    topk_mass: Annotated[Literal["renormalize", "keep", "uniform"], Symbol] = Field(
        "renormalize",
        description="Against a cached top-k teacher, the mass its k ids miss: renormalize over the "
        "k ids, keep it missing, or uniform (one more outcome, 'the rest', for both models).",
    )
    reduction: Annotated[
        Literal["token_mean", "sum", "topk_entries", "batchmean", "sequence_mean"], Symbol
    ] = Field(
        "token_mean",
        description="What the step's sum is divided by: its teacher positions (token_mean), "
        "nothing (sum), its teacher positions times k (topk_entries, a cached top-k only), its "
        "sequences (batchmean, TRL's); or each sequence's sum divided by its own teacher "
        "positions, then averaged over the step's sequences that have one (sequence_mean).",
    )
    infinite_logits: Annotated[Literal["keep", "zero"], Symbol] = Field(
        "keep",
        description="A student logit of -inf where the teacher has mass: keep it (the loss is "
        "infinite) or zero that entry's term (torchtune's masking); forward_kl and teacher_ce, "
        "materialized logits only.",
    )


class ForwardKL(DivergenceLoss):
    """``loss forward_kl weight W [temperature T]``: KL(teacher ‖ student), mode-covering."""

    kernel_mode = "forward_kl"
    name: Literal["forward_kl"] = "forward_kl"


class ReverseKL(DivergenceLoss):
    """``loss reverse_kl weight W [temperature T]``: KL(student ‖ teacher), mode-seeking (MiniLLM)."""

    kernel_mode = "reverse_kl"
    accepts_topk = False  # infinite where the student has mass and the teacher none
    name: Literal["reverse_kl"] = "reverse_kl"


class TVD(DivergenceLoss):
    """``loss tvd weight W [temperature T]``: total variation distance, ½ Σ |p − q|."""

    kernel_mode = "tvd"
    name: Literal["tvd"] = "tvd"


class TeacherCE(DivergenceLoss):
    """``loss teacher_ce weight W [temperature T]``: the cross-entropy to the teacher,
    −Σ p_T log p_S = KL(p_T ‖ p_S) + H(p_T). Its gradient is forward KL's; its value adds the
    teacher's entropy, as the loss torchtune and DistiLLM call "forward KL" reports it."""

    kernel_mode = "teacher_ce"
    name: Literal["teacher_ce"] = "teacher_ce"


class JSDLoss(DivergenceLoss):
    """``loss jsd(beta = B) weight W [temperature T]``: the generalized Jensen-Shannon
    divergence of GKD."""

    kernel_mode = "jsd"
    scheduled = ("weight", "temperature", "beta")

    name: Literal["jsd"] = "jsd"
    beta: Fraction = Field(0.5, description="Mixture weight; 0 = forward KL, 1 = reverse KL.")

    def kernel_options(self) -> dict[str, float]:
        return {"beta": float(self.beta)}  # type: ignore[arg-type]  # settled: a number

    def finite_against_topk(self) -> bool:
        return bounds(self.beta)[1] < 1.0  # β = 1 is reverse KL


class SkewLoss(DivergenceLoss):
    """DistiLLM's skew divergences: the teacher (or student) side mixed with the other by
    ``alpha``."""

    scheduled = ("weight", "temperature", "alpha")

    alpha: Fraction = Field(0.1, description="Skew of the mixture.")

    def kernel_options(self) -> dict[str, float]:
        return {"alpha": float(self.alpha)}  # type: ignore[arg-type]  # settled: a number


class SkewKL(SkewLoss):
    """``loss skew_kl(alpha = A) weight W [temperature T]``: KL(p ‖ αp + (1−α)q)."""

    kernel_mode = "skew_kl"
    name: Literal["skew_kl"] = "skew_kl"


class SkewRKL(SkewLoss):
    """``loss skew_rkl(alpha = A) weight W [temperature T]``: KL(q ‖ (1−α)p + αq)."""

    kernel_mode = "skew_rkl"
    name: Literal["skew_rkl"] = "skew_rkl"

    def finite_against_topk(self) -> bool:
        return bounds(self.alpha)[0] > 0.0  # α = 0 is reverse KL


class HiddenLoss(LossBase):
    """Match hidden states of chosen student/teacher layers, through a learned linear projection
    when widths differ (an online teacher only)."""

    teacher = "hidden"
    on_policy = True

    layers: list[Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        min_length=1, description="Pairs [student_layer, teacher_layer] whose states are matched."
    )


class HiddenMSE(HiddenLoss):
    """``loss hidden_mse(layers = [[s, t], ...]) weight W``: the mean squared error between
    hidden states of chosen student and teacher layers, through a learned linear projection
    when their widths differ (an online teacher only)."""

    name: Literal["hidden_mse"] = "hidden_mse"


class HiddenCosine(HiddenLoss):
    """``loss hidden_cosine(layers = [[s, t], ...]) weight W``: one minus the cosine between
    hidden states of chosen student and teacher layers (projected as for ``hidden_mse``)."""

    name: Literal["hidden_cosine"] = "hidden_cosine"


class DPOLoss(LossBase):
    """``loss dpo(beta = 0.1) weight W``: direct preference optimisation on chosen/rejected pairs,
    the reference model being the initial student."""

    learns_from = "pairs"
    pair_columns = ("chosen", "rejected")
    scheduled = ("weight", "beta")

    name: Literal["dpo"] = "dpo"
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference.")


class MiniLLMLoss(LossBase):
    """``loss minillm(gamma = G, clip_eps = E, ...) weight W [temperature T]``: MiniLLM's
    policy-gradient reverse KL on the student's own rollouts (Gu et al., 2024). Per rollout
    token the reward is log p_T(y_t) − log p_S(y_t); the long-term part weights each token's
    clipped importance ratio by the (discounted, length-normalised) return of the rewards
    after it, and the single-step part is the per-token reverse KL KL(p_S ‖ p_T), exact over
    the next token. Its train samples every batch (``on_policy = 1``); see the train settings
    ``teacher_mix``, ``ppo_epochs`` and ``lm_data``."""

    teacher = "logits"
    on_policy = True
    kernel_mode = "reverse_kl"  # the single-step part
    scheduled = ("weight", "temperature")

    name: Literal["minillm"] = "minillm"
    temperature: Positive = Field(
        1.0, description="Temperature of both models in the rewards and the single-step part."
    )
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount of later rewards.")
    clip_eps: float = Field(
        0.2, gt=0.0, description="PPO clipping: ratios are clipped to [1 - e, 1 + e]."
    )
    advantage: Annotated[Literal["future", "current"], Symbol] = Field(
        "future",
        description="The rewards a token's return sums: those after it (the paper's R_{t+1}, "
        "its own reward being the single-step part) or from it on (the released code, TRL).",
    )
    length_norm: Annotated[Literal["count", "discounted", "none"], Symbol] = Field(
        "count",
        description="A return divided by how many rewards it sums (MiniLLM), by the sum of "
        "their discounts (TRL), or not at all.",
    )
    whiten: bool = Field(
        True, description="Standardise the advantages over the rollout batch (MiniLLM; TRL: no)."
    )
    long_term: bool = Field(
        True, description="The clipped policy-gradient part (TRL's `rkl_advantage`)."
    )
    single_step: bool = Field(
        True, description="The single-step part (TRL's `single_step_decomposition`)."
    )


DIVERGENCES = tuple(name for name, cls in LOSSES.items() if cls.teacher == "logits")
"""The token-level losses: those comparing the student's distribution with the teacher's."""

Loss = SerializeAsAny[InstanceOf[LossBase]]
"""Any loss term (the class its ``loss`` line names), dumped by its own class. An instance
check: losses are made by the lowering alone, each validated by its own class, and a union of
the classes would have pydantic build every loss's schema inside each model with the field,
used or not."""
