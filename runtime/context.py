"""What a running stage may use: its inputs, teachers, prompts, seeds, progress and stats.

Stage implementations (``runtime/stages/<op>.py``) receive a :class:`StageContext` and a
temporary output folder; they never touch the cache or the plan directly.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlang.check.program import Program
from kdlang.check.templates import environment
from kdlang.ir.sources import HFModel, OpenAIModel
from kdlang.ir.values import EnvRef, Ref
from kdlang.plan import Plan, PlanNode

from .cache import ArtifactCache, ProgressLog
from .data import read_dataset, read_rows


class RunError(Exception):
    """A run cannot go on for a reason the user can act on (missing secret, failed requests...).
    The CLI prints it without a traceback; finished stages stay committed."""


@dataclass
class Resources:
    """Loaded teachers and models, shared by the stages of one run and closed at its end."""

    device: str = "auto"
    workdir: Path = Path(".")
    teachers: dict[str, Any] = field(default_factory=dict)
    dist: Any = None
    """The run's processes (:class:`kdlang.runtime.train.distributed.Dist`); ``None``: one."""

    def close(self) -> None:
        for teacher in self.teachers.values():
            teacher.close()
        self.teachers.clear()


class PromptTemplate:
    """A prompt compiled by kdlang's sandboxed, strict jinja2 environment. Rendering errors
    (an undefined variable, an unsafe attribute such as ``__class__``) are :class:`RunError`s
    naming the prompt, not tracebacks."""

    def __init__(self, name: str, text: str):
        self.name = name
        self._template = environment().from_string(text)

    def render(self, **variables: Any) -> str:
        from jinja2 import TemplateError

        try:
            return self._template.render(**variables)
        except TemplateError as error:
            raise RunError(f"prompt `{self.name}` cannot be rendered: {error}") from None


class StageContext:
    def __init__(
        self, plan: Plan, node: PlanNode, cache: ArtifactCache, resources: Resources, progress
    ):
        self.plan = plan
        self.node = node
        self.cache = cache
        self.resources = resources
        self._progress = progress
        self._task = None
        self._description = ""
        self.stats: dict[str, Any] = {}

    # -- the program -----------------------------------------------------------------------

    @property
    def program(self) -> Program:
        return self.plan.program

    @property
    def seed(self) -> int:
        return self.program.recipe.seed

    @property
    def device(self) -> str:
        return self.resources.device

    @property
    def dist(self):
        """The processes running this stage together (one, unless a launcher started several):
        ``rank``, ``world``, ``is_main`` and the executor's collectives (see
        :mod:`kdlang.runtime.train.distributed`)."""
        if self.resources.dist is None:
            from .train.distributed import Dist

            self.resources.dist = Dist()
        return self.resources.dist

    def output_path(self, path: str) -> Path:
        """Where a recipe's output path (``export ... to "path"``) points: relative to the run's
        working directory, like ``runs/`` (inputs, by contrast, are relative to the recipe)."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.resources.workdir / candidate

    def row_seed(self, index: int, salt: str = "") -> int:
        """A seed for row ``index`` of this stage: a function of the recipe seed, the operator
        and the row only, so a resumed run samples every row exactly as an uninterrupted one."""
        text = f"{self.seed}:{self.node.op}:{salt}:{index}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF

    def path(self, written_in: str, path: str) -> Path:
        return self.program.resolve(written_in, path)

    # -- inputs ------------------------------------------------------------------------------

    def artifact(self, name: str) -> Path:
        return self.cache.artifact(self.plan.node(name).fingerprint)

    def rows(self, name: str) -> list[dict[str, Any]]:
        return read_rows(self.artifact(name))

    def dataset(self, name: str):
        return read_dataset(self.artifact(name))

    # -- prompts -------------------------------------------------------------------------------

    def template(self, ref: Ref | str | None) -> PromptTemplate | None:
        """The compiled template of a prompt reference (or of literal text)."""
        if ref is None:
            return None
        if isinstance(ref, str):
            return PromptTemplate("(built-in)", ref)
        return PromptTemplate(ref.name, self.program.recipe.prompts[ref.name].text)

    # -- models ------------------------------------------------------------------------------

    def teacher(self, ref: Ref):
        """The teacher backend of a ``model`` declaration (loaded once per run)."""
        if ref.name not in self.resources.teachers:
            from .teachers import load_teacher

            model = self.program.recipe.models[ref.name]
            try:
                self.resources.teachers[ref.name] = load_teacher(
                    model.kind, **self.model_settings(model)
                )
            except (OSError, ValueError) as error:  # a missing folder, an unknown hub id...
                raise RunError(f"cannot load model `{ref.name}`: {error}") from None
        return self.resources.teachers[ref.name]

    def model_settings(self, model) -> dict[str, Any]:
        if isinstance(model, HFModel):
            device = self.device if model.device == "auto" else model.device
            if device == "cuda":
                import torch

                if not torch.cuda.is_available():
                    raise RunError(
                        f"{model.path} is to run on cuda, but no CUDA device is available"
                    )
            return {
                "path": self.model_path(model),
                "revision": model.revision,
                "dtype": model.dtype,
                "device": device,
                "batch_size": model.batch_size,
                "trust_remote_code": model.trust_remote_code,
                "chat_template": model.chat_template,
            }
        assert isinstance(model, OpenAIModel)
        return {
            "model": model.model,
            "base_url": secret(model.base_url),
            "api_key": secret(model.api_key),
            "concurrency": model.concurrency,
            "timeout": model.timeout,
            "max_retries": model.max_retries,
            "chat": model.chat,
            "logprobs_top_k": model.logprobs_top_k,
            "max_tokens_param": model.max_tokens_param,
            "backoff_base": model.backoff_base,
            "backoff_max": model.backoff_max,
        }

    def model_path(self, model: HFModel) -> str:
        """A local folder (relative to the recipe) when it exists, else the hub id as written."""
        local = self.program.resolve(model.span.file, model.path)
        return str(local) if local.exists() else model.path

    # -- progress and stats ----------------------------------------------------------------------

    def progress_log(self, name: str = "progress.jsonl") -> ProgressLog:
        """This process's part of the stage's progress log ``name`` (its ``load`` reads all)."""
        return ProgressLog(self.cache.progress_dir(self.node.fingerprint), name, self.dist.rank)

    def start(self, total: int | None, description: str = "") -> None:
        """Show a progress bar of ``total`` items; a stage that works in rounds calls this once
        per round and its one bar starts over."""
        if self._progress is None:
            return
        description = description or f"{self.node.name} ({self.node.op})"
        self._description = description
        if self._task is None:
            self._task = self._progress.add_task(description, total=total)
        else:
            self._progress.reset(self._task, total=total, description=description)

    def advance(self, count: int = 1, status: str | None = None) -> None:
        """Move the bar ``count`` items on; ``status`` (e.g. the latest loss) is shown beside
        the stage's name."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)
            if status is not None:
                self._progress.update(self._task, description=f"{self._description} · {status}")

    def count(self, key: str, amount: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + amount


def secret(value: Any) -> str | None:
    """Resolve ``env("NAME")`` at run time; the value is passed on and never stored."""
    if isinstance(value, EnvRef):
        resolved = os.environ.get(value.env)
        if resolved is None:
            raise RunError(
                f'environment variable {value.env} is not set (the recipe reads it with env("{value.env}"))'
            )
        return resolved
    return value
