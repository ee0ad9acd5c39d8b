"""Train settings of where a run reports and what it keeps and starts from (trackers, kept checkpoints, initial weights, how the student is loaded).

:class:`TrackingSettings` is one of the bases of :class:`kdlang.ir.training.Train`: its fields are
settings of a ``train`` block like any other (documented, lowered and fingerprinted with them).
"""

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from kdlang.ir.values import CallValue, Symbol
from kdlang.syntax.span import Span

TRACKERS = ("tensorboard", "wandb", "mlflow")
"""The trackers ``report_to`` may name."""

Tracker = Annotated[Literal["tensorboard", "wandb", "mlflow"], Symbol]


def _once_each(value: list[str]) -> list[str]:
    twice = sorted({name for name in value if value.count(name) > 1})
    if twice:
        raise PydanticCustomError(
            "kd_tracker", "`{name}` is listed twice", {"name": ", ".join(twice)}
        )
    return value


class TrackingSettings(BaseModel):
    """Settings of where a run reports and what it keeps and starts from."""

    report_to: Annotated[list[Tracker], AfterValidator(_once_each)] = Field(
        ["tensorboard"],
        description="Where every step's record goes besides metrics.jsonl: any of "
        "`tensorboard`, `wandb` (offline unless WANDB_MODE says otherwise), `mlflow` (a file "
        "store under the run folder unless MLFLOW_TRACKING_URI is set); `[]` for none.",
    )
    tracker_project: str | None = Field(
        None,
        min_length=1,
        description="The W&B project and the MLflow experiment the run is logged in "
        "(default: the recipe's title, as the run folder spells it).",
    )
    save_total_limit: int | None = Field(
        None,
        ge=1,
        description="Checkpoints kept: the newest N while the run goes on, copied into the "
        "train's artifact (`checkpoints/ckpt-<step>`) once it is done (default: the newest "
        "one, while the run goes on: what resuming needs).",
    )
    init_from: str | None = Field(
        None,
        min_length=1,
        description="A folder the student's weights start from (relative to the recipe): a "
        "checkpoint folder (`ckpt-...`) of another run, an exported model folder, or a peft "
        "adapter folder; its files are part of the train's fingerprint.",
    )
    freeze: list[Annotated[str, Symbol]] = Field(
        [],
        description="Modules of the student whose weights are not trained: a qualified name "
        "(`model.layers.0`) or its last parts (`embed_tokens`, `vision_tower`), each matching "
        "every module whose name ends so; a name the student lacks is an error listing near ones.",
    )
    pad_vocab_to_multiple: int | None = Field(
        None,
        ge=1,
        description="Resize the student's embeddings and output head to a multiple of this "
        "many rows (at least the tokenizer's size, never fewer than it has; `64` suits tensor "
        "cores); the exported model keeps the size.",
    )

    @classmethod
    def problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of these settings a train gives (as
        :meth:`kdlang.ir.descriptor.Operator.setting_problems` reports it)."""
        if "tracker_project" in given and "report_to" not in given:
            return [
                (
                    "KD0360",
                    "`tracker_project` names a W&B project or MLflow experiment, but this "
                    "train reports to TensorBoard only",
                    "tracker_project",
                    'add `report_to = ["tensorboard", "wandb"]` (or "mlflow"), or remove it',
                )
            ]
        return []


HUB_REPO_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
"""The form of a hub repo id: ``owner/name``, letters, digits and ``._-``."""


class HubRepo(BaseModel):
    """``hub("org/name")`` as an export's destination: a repo of the Hugging Face Hub.

    The call's arguments are kept as written; ``kdlang check`` says what is wrong with them
    (KD0415, KD0416), so a recipe that passes it holds one string of the form ``owner/name``."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    span: Span = Field(exclude=True, repr=False)

    @property
    def repo_id(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f'hub("{self.repo_id}")'


def _destination(value: Any) -> Any:
    if isinstance(value, CallValue):
        if value.name == "hub":
            return HubRepo(args=value.args, kwargs=value.kwargs, span=value.span)
        raise PydanticCustomError(
            "kd_export",
            'an export goes to a path ("exports/name") or to hub("org/name"), not {name}(...)',
            {"name": value.name},
        )
    return value


Destination = Annotated[str | HubRepo, BeforeValidator(_destination)]
"""Where an export goes: a path, or :class:`HubRepo`."""
