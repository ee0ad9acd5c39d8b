"""What every operator of the plan says about itself: the one descriptor the other layers read.

An operator is a kind of declaration the plan runs: a dataset source (``jsonl``, ``hf`` ...), a
stage operator (``label``, ``filter`` ...), ``train``, ``evaluate`` and ``export``. Each is one IR
class; besides its settings (the pydantic fields), the class declares, as class variables and
methods, what the checker, the planner and the runtime derive from it:

- :attr:`Operator.operator`: the plan's name of the operator (the DSL word; every dataset source
  is ``dataset``), also the name of its runtime module, ``kdlang.runtime.stages.<operator>``,
  which defines ``run(node, ctx, out)``;
- :attr:`Operator.references`: for each setting that names a declaration, the sections it may
  name. A reference to a dataset, a stage or a train is an *input*: the node runs after it;
- :attr:`Operator.code_version`: bumped when its implementation changes what it produces (a
  component of the fingerprint: it invalidates the operator's caches);
- :attr:`Operator.main_only`: whether, under several processes, it runs on one process alone
  (no teacher or training work to share); :attr:`Operator.restores`: whether its output also
  lives outside the cache (its runtime module then also defines ``restore``);
- :attr:`Operator.reads`: the setting whose reference gives the rows it reads; the columns those
  rows have are checked against :attr:`Operator.prompts` (the prompt settings and the variables
  each is rendered with), :attr:`Operator.column_settings`,
  :attr:`Operator.text_column_settings` and :attr:`Operator.numeric_column_settings` (settings
  naming a column, a column of text, a column of numbers; one left unset names none);
- :meth:`Operator.output_columns` and :meth:`Operator.estimate`: its output's columns and what
  running it costs, from its input's.

Nested nodes that are not operators (a filter's rules) declare ``references``, ``column_settings`` and
``against_columns`` the same way. Losses have their own descriptor (:class:`kdlang.ir.training.LossBase`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from kdlang.ir.values import Node

Columns = dict[str, str]
"""Column name -> kind (``str``, ``int``, ``float``, ``bool``, ``list``, ``any`` ...)."""

References = dict[str, tuple[str, ...]]
"""Setting -> the sections a reference there may name."""

DATA = ("datasets", "stages")
"""The sections a setting reading rows may name."""
UPSTREAM = ("datasets", "stages", "trains")
"""The sections whose declarations produce something a node reads: a reference to one is an
input of the node."""


@dataclass(frozen=True)
class PromptUse:
    """A setting naming a prompt, and what it is rendered with: the columns of the rows read
    (``rows``), and the variables the operator adds (``variables``)."""

    setting: str
    rows: bool = True
    variables: frozenset[str] = frozenset()


@dataclass
class Estimate:
    """What running a node will cost, estimated before running (``kdlang plan``)."""

    rows: int | None = None
    rows_upper_bound: bool = False
    teacher_calls: int | None = None
    generations: int | None = None
    generated_tokens_max: int | None = None
    logit_storage_bytes: int | None = None
    train_steps: int | None = None
    train_tokens_max: int | None = None
    logits_bytes: int | None = None
    loss_path: str | None = None
    loss_path_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, False) or k == "rows"}


class Operator(Node):
    """Base of every operator's IR class (see the module docstring for each class variable)."""

    operator: ClassVar[str]
    section: ClassVar[str]
    references: ClassVar[References] = {}
    code_version: ClassVar[int] = 1
    main_only: ClassVar[bool] = False
    restores: ClassVar[bool] = False
    reads: ClassVar[str | None] = None
    prompts: ClassVar[tuple[PromptUse, ...]] = ()
    column_settings: ClassVar[tuple[str, ...]] = ()
    text_column_settings: ClassVar[tuple[str, ...]] = ()
    numeric_column_settings: ClassVar[tuple[str, ...]] = ()

    def output_columns(self, columns: Columns) -> Columns:
        """The columns of the node's output, given those of the rows it reads."""
        return dict(columns)

    @classmethod
    def setting_problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of settings a declaration gives (``given``, by
        name), as ``(code, message, setting)`` or ``(code, message, setting, help)``: reported
        by the lowering at that setting (None: at the declaration's name). Most operators'
        settings stand alone: none."""
        return []

    def text_settings(self) -> tuple[str, ...]:
        """The settings naming a column of text in this node (:attr:`text_column_settings` unless what
        the node does decides it)."""
        return self.text_column_settings

    def scope(self, columns: Columns) -> Columns:
        """The columns the node's expressions see (its input's unless it adds some)."""
        return columns

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        """The cost of the node on ``rows`` input rows (an upper bound when ``upper``);
        ``vocab``: the vocabulary of the model it trains, where known."""
        return Estimate(rows=rows, rows_upper_bound=upper)


def reference_kinds(node: Any, setting: str) -> tuple[str, ...] | None:
    """The sections ``setting`` of ``node`` may name (None: the class does not say, a defect
    the descriptor tests catch)."""
    kinds: References = getattr(type(node), "references", {})
    return kinds.get(setting)


def reading_order(cls: type[BaseModel]) -> list[str]:
    """A node's field names in the order a reader meets them: those its own class line declares
    (the node and its IR ancestors) first, then those of each settings group it mixes in (a base
    that is a plain ``BaseModel``, not a node), group by group in the order of its bases.
    (Pydantic itself lists the mixed-in groups' fields first.)"""
    groups = [
        base
        for base in cls.__mro__[1:]
        if issubclass(base, BaseModel) and base is not BaseModel and not issubclass(base, Node)
    ]
    mixed = {name for group in groups for name in group.model_fields}
    own = [name for name in cls.model_fields if name not in mixed]
    return own + [
        name for group in groups for name in group.model_fields if name in cls.model_fields
    ]
