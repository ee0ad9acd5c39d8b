"""The settings reference, generated from the IR's pydantic models.

Every declaration, operator, filter rule and loss is one section: what it does (the model's
docstring) and a table of its settings with their type, default and description (the fields).
``docs/language.md`` embeds the output between ``<!-- reference:start -->`` and
``<!-- reference:end -->``, and a test keeps the two equal::

    python -m kdlang.ir.reference                            # print it
    python -m kdlang.ir.reference --update docs/language.md  # refresh the embedded copy
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kdlang.ir import values
from kdlang.ir.captured import CapturedLogits
from kdlang.ir.descriptor import reading_order
from kdlang.ir.losses import LOSSES, DivergenceLoss
from kdlang.ir.selection import DecontaminateRule, DedupRule
from kdlang.ir.sources import (
    DATASET_KINDS,
    DATASET_POSITIONAL,
    MODEL_KINDS,
    MODEL_POSITIONAL,
    LoRA,
    RecipeHeader,
)
from kdlang.ir.stages import STAGE_OPERATORS
from kdlang.ir.training import Evaluate, Export, Train

# Fields that are no setting: positions, discriminators, and what statements or the
# declaration's head give (a filter's rules, a train's losses, an export's path ...).
_NOT_SETTINGS = {"span", "spans", "kind", "op", "rule", "name"}


DIVERGENCE_OPTIONS = (
    "`weight` and `temperature` follow the name; the others are options in parentheses: "
    "`loss forward_kl(temperature_scale = true) weight 1.0 temperature 2.0`. "
    "Each loss accepts its own options only."
)


def _divergences() -> list[str]:
    return [name for name, cls in LOSSES.items() if issubclass(cls, DivergenceLoss)]


@dataclass
class Entry:
    """One section: a heading (how it is written), the model, and what to leave out."""

    heading: str
    model: type[BaseModel]
    positional: tuple[str, ...] = ()
    skip: frozenset[str] = frozenset()
    renamed: dict[str, str] = field(default_factory=dict)
    intro: str | None = None


def entries() -> list[tuple[str, list[Entry]]]:
    """The reference's chapters, in the order a recipe is written."""
    models = [
        Entry(
            f"`{kind}({_placeholder(cls, MODEL_POSITIONAL[kind][0])}, ...)`",
            cls,
            MODEL_POSITIONAL[kind],
        )
        for kind, cls in MODEL_KINDS.items()
    ]
    models.append(Entry("`lora(...)`", LoRA))
    datasets = [
        Entry(
            f"`{kind}({_placeholder(cls, DATASET_POSITIONAL[kind][0])}, ...)`",
            cls,
            DATASET_POSITIONAL[kind],
        )
        for kind, cls in DATASET_KINDS.items()
    ]
    datasets.append(Entry("`topk(...)`", CapturedLogits))
    stages = [
        Entry(f"`{op}(input)`", cls, ("input",), frozenset(cls.syntax_fields))
        for op, cls in STAGE_OPERATORS.items()
    ]
    rules = [
        Entry(
            "`dedup COLUMN by exact` / `by minhash(...)`",
            DedupRule,
            skip=frozenset({"column", "method"}),
            intro="Options of `minhash(...)`; `exact` takes none.",
        ),
        Entry(
            "`decontaminate COLUMN against DATASET [by ngram(n = N)]`",
            DecontaminateRule,
            skip=frozenset({"column", "against"}),
            renamed={"ngram": "n"},
            intro="Options of `ngram(...)`.",
        ),
    ]
    losses = [
        Entry(
            f"`loss {name}`",
            cls,
            intro=DIVERGENCE_OPTIONS if name == next(iter(_divergences())) else None,
        )
        for name, cls in LOSSES.items()
    ]
    return [
        (
            "Recipe header",
            [Entry('`recipe "TITLE" { ... }`', RecipeHeader, skip=frozenset({"title"}))],
        ),
        ("Models: `model NAME = ...`", models),
        ("Datasets: `dataset NAME = ... [{ ... }]`", datasets),
        ("Stage operators: `stage NAME = OPERATOR(input) { ... }`", stages),
        ("Filter rules", rules),
        (
            "Training: `train NAME { ... }`",
            [Entry("`train NAME { ... }`", Train, skip=frozenset({"losses"}))],
        ),
        ("Losses: `loss NAME[(options)] weight W [temperature T]`", losses),
        (
            "Evaluation: `eval NAME = evaluate(model, data) { ... }`",
            [Entry("`evaluate(model, data)`", Evaluate, ("model", "data"), frozenset({"metrics"}))],
        ),
        (
            'Export: `export TRAIN to "PATH" [{ ... }]`',
            [Entry('`export TRAIN to "PATH"`', Export, skip=frozenset({"train", "path"}))],
        ),
    ]


def _placeholder(model: type[BaseModel], name: str) -> str:
    """How a positional argument is shown in a heading: ``"path"`` for strings."""
    return f'"{name}"' if model.model_fields[name].annotation is str else name


def markdown() -> str:
    """The whole reference, as markdown."""
    lines = [
        "## Settings reference",
        "",
        "Generated from the compiler's own definitions (`python -m kdlang.ir.reference`). A "
        "setting is written `name = value` in the declaration's block or as a keyword argument "
        "of its call; the arguments marked *positional* may be written in order, without name. "
        "*required* settings have no default.",
        "",
    ]
    for chapter, sections in entries():
        lines += [f"### {chapter}", ""]
        for entry in sections:
            lines += _section(entry)
    return "\n".join(lines).rstrip("\n") + "\n"


def _section(entry: Entry) -> list[str]:
    lines = [f"#### {entry.heading}", ""]
    doc = _docstring(entry.model)
    if doc:
        lines += [doc, ""]
    if entry.intro:
        lines += [entry.intro, ""]
    fields = [
        (name, info)
        for name, info in ((n, entry.model.model_fields[n]) for n in reading_order(entry.model))
        if name not in _NOT_SETTINGS | entry.skip and not info.exclude
    ]
    # Positional arguments first, in order, then required settings, then the others.
    fields.sort(
        key=lambda item: (
            entry.positional.index(item[0])
            if item[0] in entry.positional
            else len(entry.positional),
            not item[1].is_required(),
        )
    )
    rows = [_row(entry, name, info) for name, info in fields]
    if not rows:
        return [*lines, "No settings.", ""]
    lines += ["| setting | type | default | description |", "|---|---|---|---|"]
    lines += rows
    return [*lines, ""]


def _row(entry: Entry, name: str, info: FieldInfo) -> str:
    shown = entry.renamed.get(name, name)
    if name in entry.positional:
        where = entry.positional.index(name) + 1
        shown = (
            f"`{shown}` (positional {where})"
            if len(entry.positional) > 1
            else f"`{shown}` (positional)"
        )
    else:
        shown = f"`{shown}`"
    description = (info.description or "").replace("|", "\\|").replace("\n", " ")
    cells = [shown, type_name(info), default_text(info), description]
    return "| " + " | ".join(cells) + " |"


def _docstring(model: type[BaseModel]) -> str:
    text = inspect.cleandoc(model.__doc__ or "")
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return "\n".join(line.rstrip() for line in text.splitlines())


# -- types -----------------------------------------------------------------------------------------


def type_name(info: FieldInfo) -> str:
    """How a field's values are written, with their bounds: ``integer >= 1``, ``name``."""
    return _describe(info.annotation, list(info.metadata))


_NAMED_VALIDATORS = {
    values._reference: "name",
    values._lr_schedule: "`constant`, `linear(...)` or `cosine(...)`",
    values._secret_only: '`env("NAME")`',
    values._secret: 'string or `env("NAME")`',
}
_NAMED_TYPES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "`true` or `false`",
    dict: "map",
    values.Ref: "name",
    values.Percent: "percentage",
    values.Schedule: "schedule",
    values.EnvRef: '`env("NAME")`',
    LoRA: "`lora(...)`",
    CapturedLogits: "`topk(...)`",
}


def _describe(annotation: Any, metadata: list) -> str:
    """``annotation`` in words; ``metadata`` holds the constraints found on the way down."""
    metadata = _flatten(metadata)
    for item in metadata:
        if isinstance(item, BeforeValidator):
            if item.func in _NAMED_VALIDATORS:
                return _NAMED_VALIDATORS[item.func]
            if item.func is values._symbol and annotation is str:
                return "column name"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _describe(args[0], [*metadata, *args[1:]])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _describe(options[0], metadata)
        if values.Schedule in options:  # a number (within bounds), or a schedule
            number = next(o for o in options if o is not values.Schedule)
            return _describe(number, metadata) + " or schedule"
        if values.Percent in options:
            return "percentage or step count"
        return " or ".join(dict.fromkeys(_describe(a, metadata) for a in options))
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return _list(_describe(args[0], []), metadata)
    if origin is dict:
        return "map"
    if annotation is typing.Any:
        return "any value"
    name = _NAMED_TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = _bounds(metadata) if annotation in (int, float) else ""
    return f"{name} {bounds}".strip()


def _list(item: str, metadata: list) -> str:
    if " or " in item:  # a list of several kinds: "list of (string or `env("NAME")`)"
        plural = f"({item})"
    else:
        plural = "lists" + item[4:] if item.startswith("list ") else item + "s"
    shortest = next((m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)), 0)
    longest = next((m.max_length for m in metadata if isinstance(m, annotated_types.MaxLen)), None)
    if shortest and shortest == longest:
        return f"list of {shortest} {plural}"
    text = f"list of {plural}"
    if shortest:
        text += f", at least {shortest}"
    if longest is not None:
        text += f", at most {longest}"
    return text


def _flatten(metadata: list) -> list:
    flat = []
    for item in metadata:
        flat += item.metadata if isinstance(item, FieldInfo) else [item]
    return flat


def _bounds(metadata: list) -> str:
    """``>= 1``, or ``in (0, 1]`` when there are both ends."""
    low: tuple[str, Any] | None = None
    high: tuple[str, Any] | None = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = ("[", item.ge)
        elif isinstance(item, annotated_types.Gt):
            low = ("(", item.gt)
        elif isinstance(item, annotated_types.Le):
            high = ("]", item.le)
        elif isinstance(item, annotated_types.Lt):
            high = (")", item.lt)
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return (">= " if low[0] == "[" else "> ") + f"{low[1]:g}"
    if high:
        return ("<= " if high[0] == "]" else "< ") + f"{high[1]:g}"
    return ""


def default_text(info: FieldInfo) -> str:
    """The default as it would be written in a recipe (``required`` when there is none)."""
    value = info.default
    if value is PydanticUndefined:
        return "*required*"
    return f"`{_written(value, info)}`"


def _written(value: Any, info: FieldInfo | None = None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        symbol = info is not None and typing.get_origin(info.annotation) is typing.Literal
        return value if symbol else f'"{value}"'
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_written(v) for v in value) + "]"
    if isinstance(value, values.LRSchedule):
        return value.kind
    return repr(value)


START, END = "<!-- reference:start -->", "<!-- reference:end -->"


def embedded(document: str) -> str:
    """The part of ``document`` between the reference markers (without them)."""
    _, start, rest = document.partition(START)
    body, end, _ = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the document has no {START} ... {END} section")
    return body.strip("\n") + "\n"


def embed(document: str) -> str:
    """``document`` with the current reference between its markers."""
    head, _, rest = document.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{markdown()}{END}{tail}"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--update":
        path = Path(argv[1])
        path.write_text(embed(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    if argv:
        sys.stderr.write("usage: python -m kdlang.ir.reference [--update FILE.md]\n")
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
