"""IR of the data stages: ``stage NAME = OPERATOR(input) { settings }``.

One class per operator, named by its DSL word; :data:`STAGE_OPERATORS` is the registry the
lowering, the checker, the planner and the runtime all key on.
"""

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kdlang.ir.expr import Expr
from kdlang.ir.values import ColumnName, Node, RefField, Symbol

Temperature = Annotated[float, Field(ge=0.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
INPUT = "The dataset or stage whose rows are read (the operator's argument)."


class Generating(Node):
    """Settings shared by every operator that asks a model to write text."""

    temperature: Temperature = Field(1.0, description="Sampling temperature; 0 = greedy.")
    top_p: TopP = Field(1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Most new tokens per generation.")
    stop: list[str] | None = Field(
        None, description="Strings that end a generation (not included)."
    )


class LabelStage(Generating):
    """``label(input)``: the teacher answers each row through a prompt; adds ``output``.

    With ``samples = n`` each row yields n rows (one per sample, ``sample`` column = 0..n-1).
    Naming the student as ``teacher`` gives self-knowledge distillation (STaR, ReST).
    """

    op: Literal["label"] = "label"
    input: RefField = Field(description=INPUT)
    teacher: RefField = Field(description="The model that writes (a `model` declaration).")
    prompt: RefField = Field(description="The prompt rendered for each row.")
    system: str | RefField | None = Field(
        None, description="System prompt (Orca-style explanation tuning)."
    )
    samples: int = Field(1, ge=1, description="Generations per row.")
    output: ColumnName = Field("output", description="Name of the column the generations go to.")


class ExpandStage(Generating):
    """``expand(seeds)``: new inputs written from seed demonstrations.

    ``method = self_instruct``: each request shows ``demos`` items sampled from the seeds and
    asks for one more; ``n`` new items in all, malformed or duplicate ones rejected.
    ``method = evol_instruct``: each seed is rewritten ``rounds`` times by in-depth
    (constraints, deepening, concretising, more reasoning) and in-breadth (new topic) evolution.
    """

    op: Literal["expand"] = "expand"
    input: RefField = Field(description=INPUT)
    teacher: RefField = Field(description="The model that writes the new items.")
    method: Annotated[Literal["self_instruct", "evol_instruct"], Symbol] = Field(
        "self_instruct", description="How new items are made (see above)."
    )
    column: ColumnName = Field(
        description="The column holding the seed items (instructions, questions)."
    )
    n: int = Field(100, ge=1, description="New items to produce (self_instruct).")
    demos: int = Field(
        3, ge=1, description="Seed demonstrations shown per request (self_instruct)."
    )
    rounds: int = Field(1, ge=1, description="Evolution rounds per seed (evol_instruct).")
    prompt: RefField | None = Field(
        None, description="Own generation prompt (variables: demos, item, operation)."
    )
    keep_seeds: bool = Field(True, description="Keep the seed rows in the output.")


class CurateStage(Generating):
    """``curate(topics)``: data written from meta-information, topics x templates (UltraChat, GLAN).

    Each input row (e.g. a topic and a template) is rendered through ``prompt`` and the teacher
    writes ``per_item`` items for it; each becomes a row with the ``output`` column.
    """

    op: Literal["curate"] = "curate"
    input: RefField = Field(description=INPUT)
    teacher: RefField = Field(description="The model that writes.")
    prompt: RefField = Field(description="The prompt rendered for each input row.")
    per_item: int = Field(1, ge=1, description="Items written per input row.")
    output: ColumnName = Field("output", description="Name of the column the items go to.")


class JudgeStage(Generating):
    """``judge(input)``: a model scores each row with a rubric prompt; adds a numeric column.

    The judge's answer is parsed for the first number (or ``Score: N``); rows whose judgement
    cannot be parsed, or falls outside ``scale``, are counted and dropped.
    """

    op: Literal["judge"] = "judge"
    input: RefField = Field(description=INPUT)
    judge: RefField = Field(description="The judging model.")
    prompt: RefField = Field(description="The rubric prompt.")
    output: ColumnName = Field("score", description="The numeric column added.")
    scale: list[float] = Field(
        [1.0, 10.0], min_length=2, max_length=2, description="[lowest, highest] valid score."
    )
    temperature: Temperature = Field(0.0, description="Sampling temperature; 0 = greedy.")
    max_tokens: int = Field(64, ge=1, description="Most tokens of one judgement.")


class PairsStage(Node):
    """``pairs(scored)``: preference pairs from several scored responses per prompt.

    Groups rows by ``group``; in each group the best-scored ``response`` becomes ``chosen`` and
    the worst ``rejected`` (ties and margins below ``min_margin`` give no pair). Output columns:
    the group column(s) kept as ``prompt`` context, ``chosen``, ``rejected``, ``margin``.
    """

    op: Literal["pairs"] = "pairs"
    input: RefField = Field(description=INPUT)
    group: ColumnName = Field(description="Column identifying the prompt the responses answer.")
    response: ColumnName = Field(description="Column holding a response.")
    score: ColumnName = Field("score", description="Column holding the response's score.")
    min_margin: float = Field(
        0.0, ge=0, description="Smallest score difference between chosen and rejected."
    )


class KeepRule(Node):
    """``keep EXPR``: rows where EXPR is true stay."""

    rule: Literal["keep"] = "keep"
    condition: Expr


class DedupRule(Node):
    """``dedup COLUMN by exact`` or ``by minhash(threshold = 0.9, num_perm = 128, ngram = 5)``."""

    rule: Literal["dedup"] = "dedup"
    column: ColumnName = Field(description="The column compared.")
    method: Literal["exact", "minhash"] = Field(
        "exact", description="exact: identical text; minhash: near-duplicates (MinHash LSH)."
    )
    threshold: float = Field(
        0.9, gt=0, le=1, description="minhash: Jaccard similarity from which rows are duplicates."
    )
    num_perm: int = Field(128, ge=16, description="minhash: permutations per signature.")
    ngram: int = Field(5, ge=1, description="minhash: words per shingle.")


class DecontaminateRule(Node):
    """``decontaminate COLUMN against DATASET [by ngram(n = 13)]``: drops rows sharing an n-gram
    of words with the same column of another dataset (typically the held-out set)."""

    rule: Literal["decontaminate"] = "decontaminate"
    column: ColumnName = Field(description="The column compared.")
    against: RefField = Field(description="The dataset no row may overlap with.")
    ngram: int = Field(13, ge=1, description="Words per n-gram, written `by ngram(n = 13)`.")


FilterRule = Annotated[KeepRule | DedupRule | DecontaminateRule, Field(discriminator="rule")]


class FilterStage(Node):
    """``filter(input) { keep ... dedup ... decontaminate ... }``: rules applied in order."""

    syntax_fields: ClassVar[dict[str, str]] = {
        "rules": "its `keep`, `dedup` and `decontaminate` lines"
    }

    op: Literal["filter"] = "filter"
    input: RefField = Field(description=INPUT)
    rules: list[FilterRule] = Field(min_length=1)


class TeacherLogitsStage(Node):
    """``teacher_logits(data)``: caches the teacher's top-k next-token log-probs on every target
    token (prompt + target), so training can run without the teacher (offline logit KD)."""

    op: Literal["teacher_logits"] = "teacher_logits"
    input: RefField = Field(description=INPUT)
    teacher: RefField = Field(description="The white-box model scored (an `hf` model).")
    prompt: RefField = Field(description="The prompt the target text follows.")
    target: ColumnName = Field(description="Column holding the text the student will learn.")
    top_k: int = Field(32, ge=1, description="Log-probs kept per token.")
    max_length: int = Field(1024, ge=1, description="Longest prompt + target, in tokens.")


STAGE_OPERATORS: dict[str, type[Node]] = {
    "label": LabelStage,
    "expand": ExpandStage,
    "curate": CurateStage,
    "judge": JudgeStage,
    "pairs": PairsStage,
    "filter": FilterStage,
    "teacher_logits": TeacherLogitsStage,
}

Stage = Annotated[
    LabelStage
    | ExpandStage
    | CurateStage
    | JudgeStage
    | PairsStage
    | FilterStage
    | TeacherLogitsStage,
    Field(discriminator="op"),
]

__all__ = ["STAGE_OPERATORS", "Stage"]
