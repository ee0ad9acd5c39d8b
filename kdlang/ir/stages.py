"""IR of the data stages: ``stage NAME = OPERATOR(input) { settings }``.

One class per operator, named by its DSL word, each its own descriptor
(:mod:`kdlang.ir.descriptor`): what it references, the prompts and columns it reads, the columns
it writes, what it costs. Defining a subclass of :class:`StageOperator` registers it in
:data:`STAGE_OPERATORS`, the registry the lowering, the checker, the planner and the runtime key
on; its runtime is ``kdlang.runtime.stages.<op>``.
"""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from kdlang.ir.descriptor import DATA, Columns, Estimate, Operator, PromptUse, References
from kdlang.ir.values import CallValue, ColumnName, RefField, Symbol

Temperature = Annotated[float, Field(ge=0.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
INPUT = "The dataset or stage whose rows are read (the operator's argument)."
MODELS = ("models",)
PROMPTS = ("prompts",)


STAGE_OPERATORS: dict[str, type["StageOperator"]] = {}
"""Every stage operator by its DSL word, in definition order."""


class StageOperator(Operator):
    """Base of the stage operators: ``op`` (a field, the DSL word) is the operator's name."""

    section: ClassVar[str] = "stages"
    reads: ClassVar[str | None] = "input"
    references: ClassVar[References] = {"input": DATA}

    op: str
    input: RefField = Field(description=INPUT)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        op = cls.model_fields["op"].default
        if isinstance(op, str):
            cls.operator = op
            STAGE_OPERATORS[op] = cls


class Generating(StageOperator):
    """Settings shared by every operator that asks a model to write text."""

    temperature: Temperature = Field(1.0, description="Sampling temperature; 0 = greedy.")
    top_p: TopP = Field(1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Keep the K likeliest tokens (0: all), before top_p.")
    max_tokens: int = Field(256, ge=1, description="Most new tokens per generation.")
    stop: list[str] | None = Field(
        None, description="Strings that end a generation (not included)."
    )


class Route(BaseModel):
    """How ``label`` sends rows to several ``teachers``: ``round_robin`` (row i to teacher
    i mod k), ``all`` (every row to every teacher) or ``sample(n = N)`` (each row to N distinct
    teachers drawn with the row's seed)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["round_robin", "all", "sample"]
    n: int | None = Field(None, ge=1)


def _route(value: Any) -> Any:
    """``round_robin``, ``all`` or ``sample(n = N)`` as a :class:`Route`."""
    if isinstance(value, Route | dict):
        return value
    if isinstance(value, CallValue):
        if value.name != "sample" or value.args or set(value.kwargs) != {"n"}:
            raise PydanticCustomError("kd_call", "a route with options is `sample(n = N)`", {})
        return {"kind": "sample", "n": value.kwargs["n"]}
    name = getattr(value, "name", value)
    if name not in ("round_robin", "all", "sample"):
        raise PydanticCustomError(
            "kd_call", "`route` is round_robin, all or sample(n = N), got {got}", {"got": name}
        )
    if name == "sample":
        raise PydanticCustomError("kd_call", "`sample` needs how many teachers: sample(n = 2)", {})
    return {"kind": name}


class LabelStage(Generating):
    """``label(input)``: the teacher answers each row through a prompt; adds ``output``.

    With ``samples = n`` each row yields n rows (one per sample, ``sample`` column = 0..n-1).
    Naming the student as ``teacher`` gives self-knowledge distillation (STaR, ReST).
    """

    references: ClassVar[References] = {
        "input": DATA,
        "teacher": MODELS,
        "teachers": MODELS,
        "prompt": PROMPTS,
        "system": PROMPTS,
    }
    prompts = (PromptUse("prompt"), PromptUse("system"))

    op: Literal["label"] = "label"
    teacher: RefField | None = Field(
        None, description="The model that writes (a `model` declaration)."
    )
    teachers: list[RefField] | None = Field(
        None,
        min_length=2,
        description="Several models that write, instead of `teacher`; `route` says which "
        "answers each row.",
    )
    route: Annotated[Route, BeforeValidator(_route)] = Field(
        default_factory=lambda: Route(kind="round_robin"),
        description="With `teachers`: round_robin (one teacher a row, in turn), all, or "
        "sample(n = N) (N distinct teachers a row, drawn with its seed); with all and sample "
        "`output` and `teacher_column` hold lists.",
    )
    teacher_column: ColumnName = Field(
        "teacher", description="With `teachers`: the column naming the teacher of each answer."
    )
    prompt: RefField | None = Field(
        None, description="The prompt rendered for each row (unless the stage answers `messages`)."
    )
    system: str | RefField | None = Field(
        None,
        description="System prompt (Orca-style explanation tuning); with `messages` it replaces "
        "the conversation's own.",
    )
    samples: int = Field(1, ge=1, description="Generations per row.")
    output: ColumnName = Field("output", description="Name of the column the generations go to.")
    messages: ColumnName | None = Field(
        None,
        description="A conversation column the teacher answers instead of a prompt: it writes "
        "the assistant's turns, and `output` holds the conversation with them.",
    )
    turns: Annotated[Literal["last", "each"], Symbol] = Field(
        "last",
        description="With `messages`: answer the last user turn (replacing the assistant turn "
        "after it), or write every assistant turn in order, each after the teacher's earlier "
        "ones.",
    )

    answer: ColumnName | None = Field(
        None,
        description="With `messages`: also write the teacher's last turn, as text, to this column.",
    )

    column_settings: ClassVar[tuple[str, ...]] = ("messages",)

    @classmethod
    def setting_problems(cls, given: frozenset[str]) -> list[tuple]:
        if "teachers" not in given:
            found: list[tuple] = [
                (
                    "KD0237",
                    f"`{setting}` routes rows to several `teachers`; this `label` has one",
                    setting,
                )
                for setting in ("route", "teacher_column")
                if setting in given
            ]
            if "teacher" not in given:
                found.append(
                    (
                        "KD0105",
                        "`label` operator needs `teacher`",
                        None,
                        "The model that writes (a `model` declaration); several: "
                        "`teachers = [a, b]`.",
                    )
                )
            return found
        return [
            (
                "KD0237",
                f"`{setting}` does not go with `teachers`"
                + (": give one or the other" if setting == "teacher" else ""),
                setting,
            )
            for setting in ("teacher", "samples", "messages")
            if setting in given
        ]

    def routed(self) -> bool:
        """Whether each row gets a list of answers (``all``, ``sample``) rather than one."""
        return self.teachers is not None and self.route.kind != "round_robin"

    def calls_per_row(self) -> int:
        if self.teachers is None:
            return self.samples
        if self.route.kind == "all":
            return len(self.teachers)
        return self.route.n or 1 if self.route.kind == "sample" else 1

    def typed_output(self, columns: Columns, typing: Any) -> Columns:
        """The output columns; a ``sample(n)`` route asking for more teachers than there are
        is reported."""
        teachers = self.teachers
        if (
            teachers is not None
            and self.route.kind == "sample"
            and (self.route.n or 0) > len(teachers)
        ):
            typing.error(
                "KD0237",
                f"`route = sample(n = {self.route.n})` asks for more teachers than the "
                f"{len(teachers)} of `teachers`",
                self.spans.get("route", self.span),
            )
        return self.output_columns(columns)

    def output_columns(self, columns: Columns) -> Columns:
        if self.teachers is not None:
            kind = "list" if self.routed() else "str"
            return {**columns, self.output: kind, self.teacher_column: kind}
        out = {**columns, self.output: "messages" if self.messages is not None else "str"}
        if self.messages is not None and self.answer is not None:
            out[self.answer] = "str"
        return {**out, "sample": "int"} if self.samples > 1 else out

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if rows is None:
            return Estimate(rows_upper_bound=upper)
        if self.messages is not None and self.turns == "each":
            # one call per assistant turn: how many the conversations hold is not known here
            return Estimate(rows=rows, rows_upper_bound=upper)
        calls = rows * self.calls_per_row()
        return Estimate(
            rows=rows if self.teachers is not None else calls,
            rows_upper_bound=upper,
            teacher_calls=calls,
            generated_tokens_max=calls * self.max_tokens,
        )


class ExpandStage(Generating):
    """``expand(seeds)``: new inputs written from seed demonstrations.

    ``method = self_instruct``: each request shows ``demos`` items sampled from the seeds and
    asks for one more; ``n`` new items in all, malformed or duplicate ones rejected.
    ``method = evol_instruct``: each seed is rewritten ``rounds`` times by in-depth
    (constraints, deepening, concretising, more reasoning) and in-breadth (new topic) evolution.
    """

    references: ClassVar[References] = {"input": DATA, "teacher": MODELS, "prompt": PROMPTS}
    # rendered with the expansion's own variables only, never with a row's columns
    prompts = (
        PromptUse("prompt", rows=False, variables=frozenset({"demos", "item", "operation", "n"})),
    )
    column_settings = ("column",)

    op: Literal["expand"] = "expand"
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

    def output_columns(self, columns: Columns) -> Columns:
        return {self.column: "str", "origin": "str"}

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if rows is None:
            return Estimate(rows_upper_bound=upper)
        made = self.n if self.method == "self_instruct" else rows * self.rounds
        return Estimate(
            rows=made + (rows if self.keep_seeds else 0),
            rows_upper_bound=True,
            teacher_calls=made,
            generated_tokens_max=made * self.max_tokens,
        )


class CurateStage(Generating):
    """``curate(topics)``: data written from meta-information, topics x templates (UltraChat, GLAN).

    Each input row (e.g. a topic and a template) is rendered through ``prompt`` and the teacher
    writes ``per_item`` items for it; each becomes a row with the ``output`` column.
    """

    references: ClassVar[References] = {"input": DATA, "teacher": MODELS, "prompt": PROMPTS}
    prompts = (PromptUse("prompt"),)

    op: Literal["curate"] = "curate"
    teacher: RefField = Field(description="The model that writes.")
    prompt: RefField = Field(description="The prompt rendered for each input row.")
    per_item: int = Field(1, ge=1, description="Items written per input row.")
    output: ColumnName = Field("output", description="Name of the column the items go to.")

    def output_columns(self, columns: Columns) -> Columns:
        return {**columns, self.output: "str"}

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if rows is None:
            return Estimate(rows_upper_bound=upper)
        return Estimate(
            rows=rows * self.per_item,
            rows_upper_bound=upper,
            teacher_calls=rows,
            generated_tokens_max=rows * self.per_item * self.max_tokens,
        )


class JudgeStage(Generating):
    """``judge(input)``: a model scores each row with a rubric prompt; adds a numeric column.

    The judge's answer is parsed for the first number (or ``Score: N``); rows whose judgement
    cannot be parsed, or falls outside ``scale``, are counted and dropped.

    With ``metrics = {helpfulness: [1, 5], honesty: [1, 5]}`` the judge scores several
    aspects in one answer, a JSON object with a number per metric (UltraFeedback's rubric); each
    metric becomes a float column, ``rationale = COLUMN`` keeps the object's ``rationale`` text
    (or, without one, the answer's text around the object). A row whose answer holds no such
    object, lacks a metric, or has one out of its range is counted and dropped.
    """

    references: ClassVar[References] = {"input": DATA, "judge": MODELS, "prompt": PROMPTS}
    prompts = (PromptUse("prompt"),)

    op: Literal["judge"] = "judge"
    judge: RefField = Field(description="The judging model.")
    prompt: RefField = Field(description="The rubric prompt.")
    output: ColumnName = Field("score", description="The numeric column added.")
    scale: list[float] = Field(
        [1.0, 10.0], min_length=2, max_length=2, description="[lowest, highest] valid score."
    )
    metrics: dict[ColumnName, Annotated[list[float], Field(min_length=2, max_length=2)]] | None = (
        Field(
            None,
            description="Several scores in one JSON answer: each metric's [lowest, highest]; "
            "each becomes a float column (instead of `output`).",
        )
    )
    rationale: ColumnName | None = Field(
        None, description="With `metrics`: the column keeping the judge's rationale text."
    )
    temperature: Temperature = Field(0.0, description="Sampling temperature; 0 = greedy.")
    max_tokens: int = Field(64, ge=1, description="Most tokens of one judgement.")

    @classmethod
    def setting_problems(cls, given: frozenset[str]) -> list[tuple]:
        if "top_k" in given and "temperature" not in given:
            why = "`top_k` shapes sampling, but a `judge` is greedy unless `temperature` is given"
            return [("KD0375", why, "top_k", "give `temperature = 0.7` too, or remove `top_k`")]
        if "metrics" in given:
            return [
                (
                    "KD0236",
                    f"`{setting}` is for a single score; with `metrics` each metric has "
                    "its own column and range",
                    setting,
                )
                for setting in ("output", "scale")
                if setting in given
            ]
        if "rationale" in given:
            return [
                (
                    "KD0236",
                    "`rationale` keeps the text of a `metrics` answer: give `metrics = {...}`",
                    "rationale",
                )
            ]
        return []

    def output_columns(self, columns: Columns) -> Columns:
        if self.metrics is None:
            return {**columns, self.output: "float"}
        added = {name: "float" for name in self.metrics}
        if self.rationale is not None:
            added[self.rationale] = "str"
        return {**columns, **added}

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if rows is None:
            return Estimate(rows_upper_bound=upper)
        return Estimate(
            rows=rows,
            rows_upper_bound=True,
            teacher_calls=rows,
            generated_tokens_max=rows * self.max_tokens,
        )


__all__ = ["STAGE_OPERATORS", "StageOperator"]
