"""Value types of the IR: references, secrets, percentages, durations, schedules.

Lowering turns syntax into neutral values first (``str``, ``int``, ``float``, ``bool``,
``None``, lists, dicts, :class:`Ref`, :class:`Percent`, :class:`CallValue`); the pydantic fields
below then give them meaning, so each setting's type decides what a call like ``linear(...)``
or a bare name like ``exact`` means there.
"""

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic_core import PydanticCustomError, core_schema

from kdlang.syntax.span import Span

VALUE_CONFIG = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True, strict=True)
"""The values inside settings (references, percentages, calls, schedules): immutable."""


class Node(BaseModel):
    """Base of every IR node: closed (unknown fields are errors) and positioned."""

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, defer_build=True, strict=True
    )
    """Unknown settings are errors; values are strict (no ``"3"`` for 3, no 1 for ``true``; an
    int is still a float); a model's schema is built when it is first used, so that a check
    builds those of the operators a recipe uses and no others. Written out here, where pydantic's
    mypy plugin reads it (``extra``: no ``**kwargs`` in the ``__init__`` it types)."""

    syntax_fields: ClassVar[dict[str, str]] = {}
    """Fields the declaration's syntax gives rather than a ``key = value`` setting (a train's
    ``loss`` lines, an export's path), each with how it is written: a setting of that name is
    an error, never silently replaced."""

    span: Span = Field(exclude=True, repr=False)
    spans: dict[str, Span] = Field(default_factory=dict, exclude=True, repr=False)


class _Lowered:
    """Validation of a field holding nodes the lowering has already built: an instance check.

    Losses and expression nodes are made by the lowering alone, each validated by its own class
    as it is made, and never read from dicts or JSON. Typing such a field as the union of the
    classes it may hold would have pydantic build the schema of every class of the union again
    inside each model with the field, used by the recipe or not (the expression classes are
    also recursive): a large part of ``kdlang check``'s start-up. Dumps still serialize each
    node by its own class."""

    def __init__(self, base: type):
        self.base = base

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.is_instance_schema(self.base)


def lowered(base: type) -> Any:
    """The type of a field holding nodes of ``base``'s subclasses built by the lowering."""
    return Annotated[base, _Lowered(base)]


class Ref(BaseModel):
    """A reference to a declaration by name (``teacher``, ``distill``)."""

    model_config = VALUE_CONFIG

    name: str
    span: Span = Field(exclude=True, repr=False)

    def __str__(self) -> str:
        return self.name


class EnvRef(BaseModel):
    """``env("NAME")``: a secret read from the environment at run time.

    Only the variable's name is stored, printed and hashed; its value never enters the IR.
    """

    model_config = VALUE_CONFIG

    env: str
    span: Span = Field(exclude=True, repr=False)


class Percent(BaseModel):
    """``30%`` (``fraction`` = 0.3). As a duration: that fraction of the training run."""

    model_config = VALUE_CONFIG

    fraction: float


class CallValue(BaseModel):
    """A call in value position, before a field's type gives it meaning."""

    # VALUE_CONFIG closed to unknown fields and written out, so that pydantic's mypy plugin types
    # __init__ without a **kwargs that the field `kwargs` would clash with
    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, defer_build=True, strict=True
    )

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    span: Span = Field(exclude=True, repr=False)


class Transition(BaseModel):
    """``a -> b`` inside a schedule call."""

    model_config = VALUE_CONFIG

    start: Any
    end: Any


def _symbol(value: Any) -> Any:
    """Bare names are symbols where a field expects one: ``method = self_instruct``."""
    if isinstance(value, Ref) and "." not in value.name:
        return value.name
    return value


Symbol = BeforeValidator(_symbol)

ColumnName = Annotated[str, Symbol]
"""A column name: a string, or a bare name (``output = rationale``)."""


def _reference(value: Any) -> Any:
    if isinstance(value, Ref):
        return value
    raise PydanticCustomError(
        "kd_reference", "expected the name of a declaration, got {got}", {"got": describe(value)}
    )


RefField = Annotated[Ref, BeforeValidator(_reference)]


def _secret(value: Any) -> Any:
    if isinstance(value, CallValue) and value.name == "env":
        if len(value.args) == 1 and isinstance(value.args[0], str) and not value.kwargs:
            return EnvRef(env=value.args[0], span=value.span)
        raise PydanticCustomError("kd_call", 'env() takes one string: env("NAME")', {})
    return value


def _secret_only(value: Any) -> Any:
    value = _secret(value)
    if isinstance(value, str):
        raise PydanticCustomError(
            "kd_secret",
            'a secret is never written into a recipe; read it from the environment: env("NAME")',
            {},
        )
    return value


SecretStr = Annotated[EnvRef, BeforeValidator(_secret_only)]
StrOrEnv = Annotated[str | EnvRef, BeforeValidator(_secret)]


# -- durations and schedules ------------------------------------------------------------------


def _fraction_of_run(value: Percent) -> Percent:
    if not 0.0 <= value.fraction <= 1.0:
        raise PydanticCustomError(
            "kd_range",
            "a share of the run must be between 0% and 100%, got {got}%",
            {"got": f"{value.fraction * 100:g}"},
        )
    return value


Duration = Annotated[Percent, AfterValidator(_fraction_of_run)] | Annotated[int, Field(ge=1)]
"""A span of training: a percentage of the run, or a number of optimizer steps."""


def duration_steps(duration: Duration, total_steps: int) -> int:
    if isinstance(duration, Percent):
        return max(1, round(duration.fraction * total_steps))
    return int(duration)


class Schedule(BaseModel):
    """A value that changes over training progress.

    ``kind`` is one of:

    - ``constant(v)``: v throughout.
    - ``linear(a -> b, over = D, start = S)``: a until S (default 0), then straight to b over D
      (default: the rest of the run), then b.
    - ``cosine(a -> b, over = D, start = S)``: the same path along half a cosine.
    - ``step(a -> b, at = D)``: a before D, b from D on.
    - ``warmup(v, over = D)``: 0 rising linearly to v over D, then v.
    """

    model_config = VALUE_CONFIG

    kind: Literal["constant", "linear", "cosine", "step", "warmup"]
    start: float
    end: float
    over: Duration | None = None
    at: Duration | None = None
    begin: Duration | None = None

    def value(self, step: int, total_steps: int) -> float:
        """The scheduled value at optimizer step ``step`` (0-based) of ``total_steps``."""
        if self.kind == "constant":
            return self.start
        if self.kind == "step":
            return (
                self.start
                if step < duration_steps(self.at or Percent(fraction=0.5), total_steps)
                else self.end
            )
        begin = duration_steps(self.begin, total_steps) if self.begin is not None else 0
        length = (
            duration_steps(self.over, total_steps)
            if self.over is not None
            else max(1, total_steps - begin)
        )
        progress = min(1.0, max(0.0, (step - begin) / length))
        if self.kind == "cosine":
            progress = 0.5 * (1.0 - math.cos(math.pi * progress))
        return self.start + (self.end - self.start) * progress

    def bounds(self) -> tuple[float, float]:
        """Least and greatest value the schedule takes (every kind is monotone between ends)."""
        return min(self.start, self.end), max(self.start, self.end)


SCHEDULES = ("constant", "linear", "cosine", "step", "warmup")


def _schedule(value: Any) -> Any:
    if not isinstance(value, CallValue):
        return value
    if value.name not in SCHEDULES:
        raise PydanticCustomError(
            "kd_schedule",
            "unknown schedule `{name}`; schedules: " + ", ".join(SCHEDULES),
            {"name": value.name},
        )
    kw = dict(value.kwargs)
    allowed = {
        "constant": set(),
        "linear": {"over", "start"},
        "cosine": {"over", "start"},
        "step": {"at"},
        "warmup": {"over"},
    }
    unknown = set(kw) - allowed[value.name]
    if unknown:
        raise PydanticCustomError(
            "kd_schedule",
            "`{name}` has no argument `{arg}`",
            {"name": value.name, "arg": sorted(unknown)[0]},
        )
    args = value.args
    if value.name in ("constant", "warmup"):
        if len(args) != 1 or not _is_number(args[0]):
            raise PydanticCustomError(
                "kd_schedule", "`{name}` takes one number: {name}(v)", {"name": value.name}
            )
        start = 0.0 if value.name == "warmup" else float(args[0])
        end = float(args[0])
    else:
        if len(args) != 1 or not isinstance(args[0], Transition):
            raise PydanticCustomError(
                "kd_schedule",
                "`{name}` takes a transition: {name}(a -> b, ...)",
                {"name": value.name},
            )
        if not (_is_number(args[0].start) and _is_number(args[0].end)):
            raise PydanticCustomError("kd_schedule", "schedule ends must be numbers", {})
        start, end = float(args[0].start), float(args[0].end)
    if value.name == "step" and "at" not in kw:
        raise PydanticCustomError("kd_schedule", "`step` needs `at = N%` or a step count", {})
    return {
        "kind": value.name,
        "start": start,
        "end": end,
        "over": kw.get("over"),
        "at": kw.get("at"),
        "begin": kw.get("start"),
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


ScheduleCall = BeforeValidator(_schedule)
"""Reads a schedule call (``linear(1 -> 0)``) where a field takes a number or a schedule."""

Scheduled = Annotated[float | Schedule, ScheduleCall]
"""A number, or a schedule of numbers over training."""


def scheduled_within(
    *, gt: float | None = None, ge: float | None = None, le: float | None = None
) -> Any:
    """A number within bounds, or a schedule. A constant out of bounds is an error here
    (KD0104); whether a schedule stays within them is checked later (KD0305)."""
    number = Annotated[float, Field(gt=gt, ge=ge, le=le)]
    return Annotated[number | Schedule, BeforeValidator(_schedule)]


def bounds(value: float | Schedule) -> tuple[float, float]:
    return value.bounds() if isinstance(value, Schedule) else (value, value)


def at_step(value: float | Schedule, step: int, total_steps: int) -> float:
    return value.value(step, total_steps) if isinstance(value, Schedule) else float(value)


class LRSchedule(BaseModel):
    """Learning-rate shape: ``constant``, ``linear`` (decay to ``min_ratio``) or ``cosine``, each
    with an optional linear ``warmup`` (a percentage of the run or a step count)."""

    model_config = VALUE_CONFIG

    kind: Literal["constant", "linear", "cosine"]
    warmup: Duration | None = None
    min_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    def factor(self, step: int, total_steps: int) -> float:
        warm = duration_steps(self.warmup, total_steps) if self.warmup is not None else 0
        if step < warm:
            return (step + 1) / warm
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        shape = (
            1.0 - progress if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        )
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def _lr_schedule(value: Any) -> Any:
    if isinstance(value, Ref):
        value = CallValue(name=value.name, span=value.span)
    if not isinstance(value, CallValue):
        return value
    if value.name not in ("constant", "linear", "cosine"):
        raise PydanticCustomError(
            "kd_schedule",
            "unknown learning-rate schedule `{name}`; use constant, linear or cosine",
            {"name": value.name},
        )
    if value.args:
        raise PydanticCustomError(
            "kd_schedule",
            "learning-rate schedules take keywords only: {name}(warmup = 5%)",
            {"name": value.name},
        )
    return {"kind": value.name, **value.kwargs}


LRScheduleField = Annotated[LRSchedule, BeforeValidator(_lr_schedule)]


def describe(value: Any) -> str:
    """How a neutral value is named in messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, Ref):
        return f"the name `{value.name}`"
    if isinstance(value, CallValue):
        return f"a call to `{value.name}`"
    if isinstance(value, Percent):
        return "a percentage"
    return type(value).__name__
