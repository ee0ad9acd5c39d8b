"""The IR of one recipe file: its declarations by name, in source order."""

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, SerializeAsAny

from kdlang.ir.selection import SelectStage  # noqa: F401  pairs, filter, select: registered by import
from kdlang.ir.sources import Dataset, Model, Prompt, RecipeHeader
from kdlang.ir.stages import StageOperator
from kdlang.ir.teacher_logits import TeacherLogitsStage  # noqa: F401  registered by import
from kdlang.ir.training import Evaluate, Export, Train
from kdlang.ir.transforms import TRANSFORMS  # noqa: F401  map, explode, union: registered by import
from kdlang.syntax.span import Span


class Import(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, defer_build=True)

    path: str
    span: Span = Field(exclude=True, repr=False)


class Recipe(BaseModel):
    """Every declaration of a file. Names are unique across models, datasets, prompts, stages,
    trains and evals; ``exports`` refer to trains."""

    model_config = ConfigDict(arbitrary_types_allowed=True, defer_build=True)

    file: str
    header: RecipeHeader | None = None
    imports: list[Import] = Field(default_factory=list)
    models: dict[str, Model] = Field(default_factory=dict)
    datasets: dict[str, Dataset] = Field(default_factory=dict)
    prompts: dict[str, Prompt] = Field(default_factory=dict)
    stages: dict[str, SerializeAsAny[InstanceOf[StageOperator]]] = Field(default_factory=dict)
    trains: dict[str, Train] = Field(default_factory=dict)
    evals: dict[str, Evaluate] = Field(default_factory=dict)
    exports: list[Export] = Field(default_factory=list)
    name_spans: dict[str, Span] = Field(default_factory=dict, exclude=True, repr=False)
    broken: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)
    """Names declared with errors (already reported), by section: references to them are not
    reported again."""

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "models",
        "datasets",
        "prompts",
        "stages",
        "trains",
        "evals",
    )

    @classmethod
    def empty(cls, file: str) -> "Recipe":
        """A recipe of ``file`` with nothing declared yet, filled in by lowering. Not validated:
        each declaration is validated by its own model when lowered, and validating this
        container would build the schema of every IR model, used by the file or not. Every field
        is given: pydantic would otherwise inspect each default factory's signature."""
        sections: dict[str, Any] = {section: {} for section in cls.SECTIONS}
        return cls.model_construct(
            file=file,
            header=None,
            imports=[],
            exports=[],
            name_spans={},
            broken={},
            **sections,
        )

    def lookup(self, name: str) -> tuple[str, Any] | None:
        """(section, node) of a declared name, or None."""
        for section in self.SECTIONS:
            table = getattr(self, section)
            if name in table:
                return section, table[name]
        return None

    def names(self) -> list[str]:
        return [name for section in self.SECTIONS for name in getattr(self, section)]

    @property
    def seed(self) -> int:
        return self.header.seed if self.header else 0

    @property
    def title(self) -> str:
        if self.header:
            return self.header.title
        stem = self.file.rsplit("/", 1)[-1]
        return stem[:-3] if stem.endswith(".kd") else stem


def strip_spans(value: Any) -> Any:
    """A recipe's meaning: its dump with positions removed (spans are excluded from dumps)."""
    if isinstance(value, BaseModel):
        return strip_spans(value.model_dump(mode="python"))
    if isinstance(value, dict):
        return {
            k: strip_spans(v) for k, v in value.items() if k not in ("span", "spans", "name_spans")
        }
    if isinstance(value, list | tuple):
        return [strip_spans(v) for v in value]
    return value
