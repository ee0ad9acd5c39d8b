"""Teacher backends: the models that write, judge and score data for distillation.

``load_teacher(kind, **settings)`` builds one from plain settings (the lowered ``model``
declaration of a recipe). Kinds:

- ``"hf"`` — :class:`~kdlang.runtime.teachers.hf.HFTeacher`, a white-box transformers causal LM.
- ``"openai"`` — :class:`~kdlang.runtime.teachers.openai.OpenAITeacher`, any OpenAI-compatible
  server (black-box).

Backends import their heavy dependencies only when loaded.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import (
    Generation,
    GenerationRequest,
    Teacher,
    TeacherCapabilityError,
    TeacherError,
    TeacherRequestError,
    TeacherStats,
    TopK,
)

TEACHERS: dict[str, str] = {
    "hf": ".hf:HFTeacher",
    "openai": ".openai:OpenAITeacher",
}
"""Registry: backend kind → ``module:class``, resolved lazily by :func:`teacher_class`."""


def teacher_class(kind: str) -> type[Teacher]:
    """The backend class registered under ``kind``; ``KeyError`` lists the known kinds."""
    if kind not in TEACHERS:
        raise KeyError(f"unknown teacher kind {kind!r}; known: {', '.join(sorted(TEACHERS))}")
    module, _, name = TEACHERS[kind].partition(":")
    return getattr(import_module(module, __package__), name)


def load_teacher(kind: str, **settings: Any) -> Teacher:
    """Build a teacher of ``kind`` from ``settings`` (see each backend's constructor)."""
    return teacher_class(kind)(**settings)


__all__ = [
    "TEACHERS",
    "Generation",
    "GenerationRequest",
    "Teacher",
    "TeacherCapabilityError",
    "TeacherError",
    "TeacherRequestError",
    "TeacherStats",
    "TopK",
    "load_teacher",
    "teacher_class",
]
