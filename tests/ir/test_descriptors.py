"""Every operator and loss descriptor is complete, and says the truth about its class.

The checker, the planner and the runtime read what the descriptors declare instead of listing
operators themselves, so a missing or wrong declaration would silently skip a check (a
reference of unknown kind, a prompt never checked against its rows): these tests walk every
registered class and every field it has.
"""

from __future__ import annotations

import typing
from importlib import import_module
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from kdlang.ir.descriptor import Operator
from kdlang.ir.losses import LOSSES, LossBase
from kdlang.ir.recipe import Recipe
from kdlang.ir.selection import DecontaminateRule, DedupRule, KeepRule
from kdlang.ir.sources import DATASET_KINDS
from kdlang.ir.stages import STAGE_OPERATORS
from kdlang.ir.training import Evaluate, Export, Metric, Train
from kdlang.ir.values import Ref

OPERATORS: list[type[Operator]] = [
    *DATASET_KINDS.values(),
    *STAGE_OPERATORS.values(),
    Train,
    Evaluate,
    Export,
]
PARTS = [KeepRule, DedupRule, DecontaminateRule, Metric]
RUNTIME = Path(__file__).resolve().parents[2] / "runtime" / "stages"
SECTIONS = {*Recipe.SECTIONS, "exports"}


def _holds_reference(info: FieldInfo) -> bool:
    """Whether a field's type admits a reference (``RefField``, ``str | RefField`` ...)."""

    def walk(tp) -> bool:
        if tp is Ref:
            return True
        return any(walk(arg) for arg in typing.get_args(tp))

    return walk(info.annotation)


def _ids(classes) -> list[str]:
    return [cls.__name__ for cls in classes]


@pytest.mark.parametrize("cls", OPERATORS + PARTS, ids=_ids(OPERATORS + PARTS))
def test_every_reference_has_its_kinds(cls):
    referencing = {name for name, info in cls.model_fields.items() if _holds_reference(info)}
    declared = set(getattr(cls, "references", {}))
    assert referencing == declared
    for kinds in getattr(cls, "references", {}).values():
        assert kinds and set(kinds) <= set(Recipe.SECTIONS)


@pytest.mark.parametrize("cls", OPERATORS, ids=_ids(OPERATORS))
def test_every_operator_descriptor_names_its_own_settings(cls):
    assert cls.operator and cls.section in SECTIONS
    assert cls.code_version >= 1
    fields = cls.model_fields
    if cls.reads is not None:
        assert cls.references[cls.reads] == ("datasets", "stages")
    for use in cls.prompts:
        assert cls.references[use.setting] == ("prompts",)
    for setting in (*cls.column_settings, *cls.text_column_settings):
        assert setting in fields
    if "op" in fields:  # the DSL word is the operator's name
        assert fields["op"].default == cls.operator
    # a prompt or column setting needs rows to be checked against
    assert cls.reads is not None or not (cls.prompts or cls.column_settings)


def test_every_field_naming_a_prompt_is_checked_against_its_rows():
    for cls in OPERATORS:
        prompts = {s for s, kinds in cls.references.items() if kinds == ("prompts",)}
        assert prompts == {use.setting for use in cls.prompts}, cls.__name__


@pytest.mark.parametrize("cls", PARTS, ids=_ids(PARTS))
def test_the_parts_of_operators_name_their_own_settings(cls):
    for setting in (
        *getattr(cls, "column_settings", ()),
        *getattr(cls, "expressions", {}),
        *getattr(cls, "against_columns", {}),
        *getattr(cls, "against_columns", {}).values(),
    ):
        assert setting in cls.model_fields


def test_every_operator_has_a_runtime_module_and_every_module_an_operator():
    operators = {cls.operator for cls in OPERATORS}
    modules = {p.stem for p in RUNTIME.glob("*.py") if not p.stem.startswith("_")}
    # every module of runtime/stages/ is an operator's, or a helper named with a leading `_`
    assert operators == modules


@pytest.mark.parametrize("op", sorted({cls.operator for cls in OPERATORS}))
def test_every_runtime_module_runs_and_restores_as_its_descriptor_says(op):
    module = import_module(f"kdlang.runtime.stages.{op}")
    assert callable(module.run)
    restores = {cls.restores for cls in OPERATORS if cls.operator == op}
    assert len(restores) == 1  # the dataset sources agree
    assert callable(getattr(module, "restore", None)) == restores.pop()


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_descriptor_is_consistent(name):
    cls = LOSSES[name]
    assert issubclass(cls, LossBase)
    assert cls.model_fields["name"].default == name
    assert cls.learns_from in ("tokens", "pairs")
    assert bool(cls.pair_columns) == (cls.learns_from == "pairs")
    for setting in cls.scheduled:
        assert setting in cls.model_fields
    if cls.teacher == "logits":  # compared through the divergence kernels
        assert cls.kernel_mode and "temperature" in cls.scheduled
    else:
        assert cls.kernel_mode is None and not cls.accepts_topk
    # only what compares the student with a teacher learns from the student's own samples
    assert cls.on_policy == (cls.teacher is not None)


def test_the_settled_loss_is_typed_and_numeric():
    from kdlang.ir.values import Schedule
    from kdlang.syntax.span import Span

    span = Span("t.kd", 1, 1, 1, 1)
    ramp = Schedule(kind="linear", start=0.0, end=1.0)
    loss = LOSSES["jsd"](weight=ramp, beta=ramp, temperature=2.0, span=span)
    settled = loss.at_step(5, 10)  # halfway along the ramp
    assert type(settled) is type(loss)
    assert (settled.weight, settled.beta, settled.temperature) == (0.5, 0.5, 2.0)
    assert settled.kernel_options() == {"beta": 0.5}
    assert loss.weight is ramp  # the recipe's loss is left as it is
