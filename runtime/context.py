"""What a running stage may use: its inputs, teachers, prompts, seeds, progress and stats.

Stage implementations (``runtime/stages/<op>.py``, and the training machinery they call) receive
a :class:`StageContext` and a temporary output folder. The context is their only door to the
cache: they read artifacts and manifests of other plan nodes by name (:meth:`~StageContext.
artifact`, :meth:`~StageContext.rows`, :meth:`~StageContext.manifest`), keep resumable work in
their node's progress folder (:meth:`~StageContext.progress_dir`,
:meth:`~StageContext.progress_log`), and ask whether an output folder outside the cache may be
replaced (:meth:`~StageContext.unsafe_output`); the cache object itself stays private here.

The context is also where a model declaration becomes what the runtime loads: where an ``hf``
model comes from (:meth:`~StageContext.model_path`, by the rule the plan fingerprints it with)
and the settings its backend is loaded with (:meth:`~StageContext.model_settings`), so every
stage loads a model the same way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from jinja2 import TemplateError

from kdlang.check.exports import unsafe_destination
from kdlang.check.program import Program
from kdlang.check.sandbox import TemplateLimit, compile_prompt, render
from kdlang.ir.sources import HFModel, OpenAIModel
from kdlang.ir.values import EnvRef, Ref
from kdlang.plan import Plan, PlanNode

from .cache import ArtifactCache, ProgressLog
from .data import read_dataset, read_rows
from .distributed import Dist
from .errors import RunError
from .hub import hub_unavailable

__all__ = ["PromptTemplate", "Resources", "StageContext", "secret"]


@dataclass
class Resources:
    """Loaded teachers and models, shared by the stages of one run and closed at its end."""

    device: str = "auto"
    workdir: Path = Path(".")
    teachers: dict[str, Any] = field(default_factory=dict)
    dist: Dist | None = None
    """The run's processes (:class:`kdlang.runtime.distributed.Dist`); ``None``: one."""

    def close(self) -> None:
        for teacher in self.teachers.values():
            teacher.close()
        self.teachers.clear()


class PromptTemplate:
    """A prompt compiled by kdlang's sandboxed, strict, bounded jinja2 environment
    (:mod:`kdlang.check.sandbox`). Whatever goes wrong in a render (an undefined variable, an
    unsafe attribute such as ``__class__``, a division by zero, a bound passed, a macro that
    recurses without end) is a :class:`RunError` naming the prompt and the row, not a
    traceback."""

    def __init__(self, name: str, text: str):
        self.name = name
        try:
            self._template = compile_prompt(text)
        except RecursionError:
            raise RunError(f"prompt `{name}` nests too deep to compile") from None

    def render(self, row: int | None = None, /, **variables: Any) -> str:
        """The prompt on ``variables``; ``row`` (0-based) is named in an error."""
        try:
            return render(self._template, variables)
        except RecursionError:
            reason = "it recurses too deep (a macro that calls itself without end?)"
        except TemplateLimit as error:
            reason = str(error)
        except Exception as error:  # any failure of a user's template
            reason = str(error) if isinstance(error, TemplateError) else _describe(error)
        where = f" on row {row + 1}" if row is not None else ""
        reason = _redact(reason, variables)
        raise RunError(f"prompt `{self.name}` cannot be rendered{where}: {reason}")


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _redact(message: str, variables: dict[str, Any]) -> str:
    """``message`` with every text of the row it quotes replaced by ``…``: an error names the
    prompt and the row, never shows the data (which may hold what should not be shown)."""
    texts: list[str] = []
    pending = list(variables.values())
    while pending and len(texts) < 10_000:
        value = pending.pop()
        if isinstance(value, str) and len(value) >= 3:
            texts.append(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
    for text in sorted(texts, key=len, reverse=True):
        if text in message:
            message = message.replace(text, "…")
    return message


class StageContext:
    """The run as one plan node (``node``) sees it. ``plan`` and ``node`` are the plan's own
    (read them, never change them); ``stats`` is what the node reports (its manifest's
    ``stats`` and the run report)."""

    def __init__(
        self,
        plan: Plan,
        node: PlanNode,
        cache: ArtifactCache,
        resources: Resources,
        progress: Any = None,
    ):
        self.plan = plan
        self.node = node
        self.resources = resources
        self._cache = cache
        self._progress = progress
        self._task: Any = None
        self._description = ""
        self.stats: dict[str, Any] = {}

    # -- the program -----------------------------------------------------------------------

    @property
    def program(self) -> Program:
        return self.plan.program

    @property
    def seed(self) -> int:
        """The node's seed as the plan resolved it (a train's own ``seed``, else the recipe's)."""
        return self.node.seed

    @property
    def device(self) -> str:
        return self.resources.device

    @property
    def dist(self) -> Dist:
        """The processes running this stage together (one, unless a launcher started several):
        ``rank``, ``world``, ``is_main`` and the executor's collectives (see
        :mod:`kdlang.runtime.distributed`)."""
        if self.resources.dist is None:
            self.resources.dist = Dist()
        return self.resources.dist

    def row_seed(self, index: int, salt: str = "") -> int:
        """A seed for row ``index`` of this stage: a function of the recipe seed, the operator
        and the row only, so a resumed run samples every row exactly as an uninterrupted one."""
        text = f"{self.seed}:{self.node.op}:{salt}:{index}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF

    def path(self, written_in: str, path: str) -> Path:
        """A path written in the recipe file ``written_in``, relative to that file's folder."""
        return self.program.resolve(written_in, path)

    # -- outputs outside the cache ----------------------------------------------------------

    def output_path(self, path: str) -> Path:
        """Where a recipe's output path (``export ... to "path"``) points: relative to the run's
        working directory, like ``runs/`` (inputs, by contrast, are relative to the recipe)."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.resources.workdir / candidate

    def unsafe_output(self, path: Path) -> str | None:
        """Why the folder ``path`` must not be replaced by a stage's output: it is the run's
        working directory or cache, lies inside the cache, or holds either
        (:func:`kdlang.check.exports.unsafe_destination`); None when it may be."""
        return unsafe_destination(path, self.resources.workdir, self._cache.root)

    # -- other nodes' outputs -----------------------------------------------------------------

    def artifact(self, name: str) -> Path:
        """The committed artifact folder of plan node ``name`` (an input of this node)."""
        return self._cache.artifact(self.plan.node(name).fingerprint)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """The rows of the data artifact of plan node ``name``."""
        return read_rows(self.artifact(name))

    def dataset(self, name: str):
        """The data artifact of plan node ``name`` as a ``datasets.Dataset`` (memory-mapped)."""
        return read_dataset(self.artifact(name))

    def manifest(self, name: str) -> dict[str, Any] | None:
        """The committed manifest of plan node ``name`` — an input, or any node of the plan
        (the evaluations a model card lists); None while it has not run."""
        return self._cache.manifest(self.plan.node(name).fingerprint)

    # -- this node's progress ----------------------------------------------------------------

    def progress_dir(self) -> Path:
        """This node's progress folder (created): what a long stage has finished so far, kept
        across killed runs of the same fingerprint and removed once its artifact is committed
        (or when the node is forced)."""
        folder = self._cache.progress_dir(self.node.fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def progress_log(self, name: str = "progress.jsonl") -> ProgressLog:
        """This process's part of the stage's progress log ``name`` (its ``load`` reads all)."""
        return ProgressLog(self.progress_dir(), name, self.dist.rank)

    # -- prompts -------------------------------------------------------------------------------

    @overload
    def template(self, ref: Ref | str) -> PromptTemplate: ...
    @overload
    def template(self, ref: Ref | str | None) -> PromptTemplate | None: ...

    def template(self, ref: Ref | str | None) -> PromptTemplate | None:
        """The compiled template of a prompt reference (or of literal text); None for none."""
        if ref is None:
            return None
        if isinstance(ref, str):
            return PromptTemplate("(built-in)", ref)
        return PromptTemplate(ref.name, self.program.recipe.prompts[ref.name].text)

    # -- models ------------------------------------------------------------------------------

    def model(self, ref: Ref) -> HFModel | OpenAIModel:
        """The declaration of the ``model`` that ``ref`` names."""
        return self.program.recipe.models[ref.name]

    def teacher(self, ref: Ref):
        """The teacher backend of a ``model`` declaration (loaded once per run)."""
        if ref.name not in self.resources.teachers:
            from .teachers import load_teacher

            model = self.model(ref)
            try:
                self.resources.teachers[ref.name] = load_teacher(
                    model.kind, **self.model_settings(model)
                )
            except (OSError, ValueError) as error:  # a missing folder, an unknown hub id...
                raise RunError(f"cannot load model `{ref.name}`: {error}") from None
        return self.resources.teachers[ref.name]

    def tokenizer(self, ref: Ref):
        """The tokenizer of the ``hf`` model ``ref`` names, loaded from where and at the
        revision :meth:`model_settings` loads the model (its weights are not loaded)."""
        from transformers import AutoTokenizer

        model = self.model(ref)
        assert isinstance(model, HFModel)
        self._require_hub(model)
        source = self._hf_source(model)
        try:
            return AutoTokenizer.from_pretrained(
                source["path"],
                revision=source["revision"],
                trust_remote_code=source["trust_remote_code"],
            )
        except (OSError, ValueError) as error:
            raise RunError(f"cannot load the tokenizer of `{ref.name}`: {error}") from None

    def model_settings(self, model: HFModel | OpenAIModel) -> dict[str, Any]:
        """The keyword arguments a model's backend is loaded with (a teacher, a student, a
        trained student with its ``path`` replaced): the one place where a declaration
        becomes what is loaded. An ``hf`` model's device is the run's ``--device`` unless it
        names its own; ``cuda`` without a CUDA device is a :class:`RunError`; its
        ``chat_template_args`` reach every backend that renders its template. An ``openai``
        model's ``env(...)`` settings are read from the environment here."""
        if isinstance(model, HFModel):
            self._require_hub(model)
            device = self.device if model.device == "auto" else model.device
            if device == "cuda":
                import torch

                if not torch.cuda.is_available():
                    raise RunError(
                        f"{model.path} is to run on cuda, but no CUDA device is available"
                    )
            return {
                **self._hf_source(model),
                "dtype": model.dtype,
                "device": device,
                "batch_size": model.batch_size,
                "decode_slots": model.decode_slots,
                "attention": model.attention,
                "chat_template": model.chat_template,
                "chat_template_args": model.chat_template_args,
            }
        assert isinstance(model, OpenAIModel)
        return {
            "model": model.model,
            "base_url": (
                [secret(url) for url in model.base_url]
                if isinstance(model.base_url, list)
                else secret(model.base_url)
            ),
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
        """Where an ``hf`` model loads from, as the plan resolved it (:mod:`kdlang.plan.models`):
        its local folder when there is one, else the hub id as written: the same rule that
        decides the model's identity in every fingerprint."""
        return self.plan.source(model).location

    def hub_id(self, model: HFModel) -> str | None:
        """The hub id an ``hf`` model loads from; None when it is a local folder."""
        return self.plan.source(model).hub_id

    def _require_hub(self, model: HFModel) -> None:
        """Stop at once, naming the model and its hub id, when an ``hf`` model is a hub id that
        cannot be had: not in the local cache, and the hub offline or out of reach (the
        libraries would retry for minutes first). An ``evaluate`` of a train loads the trained
        student from its artifact, never from the hub: nothing to check then."""
        hub_id = self.hub_id(model)
        if hub_id is None:
            return
        stage = self.node.node
        if self.node.op == "evaluate" and stage.model.name in self.program.recipe.trains:
            return
        problem = hub_unavailable(hub_id, model.revision)
        if problem is not None:
            names = [n for n, m in self.program.recipe.models.items() if m is model]
            raise RunError(f"cannot load model `{names[0] if names else hub_id}`: {problem}")

    def _hf_source(self, model: HFModel) -> dict[str, Any]:
        """What identifies the files an ``hf`` model loads: where, which revision, and whether
        its own code may run."""
        return {
            "path": self.model_path(model),
            "revision": model.revision,
            "trust_remote_code": model.trust_remote_code,
        }

    # -- progress and stats ----------------------------------------------------------------------

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
