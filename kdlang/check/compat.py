"""Compatibility between teachers, students, data and losses, checked before anything loads.

Token-level losses need the teacher's distribution: an online white-box (``hf``) teacher, or a
``teacher_logits`` stage's cached top-k. The teacher and the student must then share a
vocabulary (compared from local tokenizer files; for hub models the runtime checks it before
the first step). ``on_policy`` needs an online teacher; ``dpo`` needs pairs (see schemas);
every scheduled value must stay in its setting's range over the whole run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kdlang.check.captured import captured_spec, check_captured
from kdlang.check.conversations import check_conversation_sources
from kdlang.check.minillm import check_minillm
from kdlang.check.program import Program
from kdlang.ir import losses as ls
from kdlang.ir import selection as sel
from kdlang.ir import training as tr
from kdlang.ir.sources import HFModel, OpenAIModel
from kdlang.ir.teacher_logits import TeacherLogitsStage
from kdlang.ir.values import Node, Schedule, bounds
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.source import kind_of

# (setting, lowest, highest, lowest allowed inclusive?)
RANGES = {
    "weight": (0.0, None, True),
    "temperature": (0.0, None, False),
    "beta": (0.0, 1.0, True),
    "alpha": (0.0, 1.0, True),
    "on_policy": (0.0, 1.0, True),
}


def cached_logits_stage(program: Program, data_name: str) -> TeacherLogitsStage | None:
    """The ``teacher_logits`` stage whose cache a train reads, if its data is one."""
    stage = program.recipe.stages.get(data_name)
    while isinstance(stage, sel.FilterStage):  # filters keep the cached columns as they are
        stage = program.recipe.stages.get(stage.input.name)
    return stage if isinstance(stage, TeacherLogitsStage) else None


CAPTURED_COLUMNS = ("topk_ids", "topk_logprobs")
"""The columns that make a dataset a captured top-k teacher (kdlang's own layout, as a
``teacher_logits`` stage writes and ``export STAGE to "x.parquet"`` keeps them)."""


def captured_logits(program: Program, data_name: str) -> bool:
    """Whether ``data_name`` is a dataset (or a filter of one) holding captured top-k teacher
    log-probs in kdlang's layout: a teacher distribution a train needs no teacher for."""
    recipe = program.recipe
    while data_name in recipe.stages and isinstance(recipe.stages[data_name], sel.FilterStage):
        data_name = recipe.stages[data_name].input.name
    if captured_spec(program, data_name) is not None:
        return True  # declared: `logits = topk(...)` (its columns are checked in captured.py)
    columns = program.schemas.get(data_name) if data_name in recipe.datasets else None
    return columns is not None and all(
        columns.get(name) in ("list", "any") for name in CAPTURED_COLUMNS
    )


def check_compat(program: Program, errors: Collector) -> None:
    recipe = program.recipe
    check_conversation_sources(program, errors)
    check_captured(program, errors)
    for stage in recipe.stages.values():
        if isinstance(stage, TeacherLogitsStage):
            model = recipe.models.get(stage.teacher.name)
            if isinstance(model, OpenAIModel) and model.chat:
                errors.error(
                    "KD0301",
                    f"`teacher_logits` scores given targets, which `{stage.teacher.name}` cannot do "
                    "through the chat endpoint",
                    stage.spans.get("teacher", stage.span),
                    notes=[("the model is declared here", model.span)],
                    help="set `chat = false` on the model: the completions endpoint returns the log-probs "
                    "of a given text (echo), as vLLM and TGI do",
                )
    for train in recipe.trains.values():
        _check_ranges(train, errors)
        _check_infinite_logits(train, errors)
        refs = (train.student, train.teacher, train.data)
        if any(ref is not None and ref.name in recipe.broken for ref in refs):
            continue  # what it names has errors of its own: checked once they are fixed
        check_minillm(program, train, errors)
        student = recipe.models.get(train.student.name)
        if student is not None and not isinstance(student, HFModel):
            errors.error(
                "KD0204",
                "the student must be an `hf` model (kdlang trains transformers models)",
                train.student.span,
            )
        teacher = recipe.models.get(train.teacher.name) if train.teacher else None
        cached = cached_logits_stage(program, train.data.name)
        has_cache = cached is not None or captured_logits(program, train.data.name)
        token_losses = [loss for loss in train.losses if loss.teacher == "logits"]
        hidden_losses = [loss for loss in train.losses if loss.teacher == "hidden"]
        if train.teacher is not None and teacher is not None and not isinstance(teacher, HFModel):
            for loss in train.losses:
                if loss.teacher is not None:
                    errors.error(
                        "KD0301",
                        f"`{loss.name}` needs the teacher's logits, but `{train.teacher.name}` is a "
                        "black-box `openai` model",
                        loss.span,
                        help="use `loss sft` on the teacher's text, or cache top-k log-probs with a "
                        "`teacher_logits` stage where the server returns them",
                    )
        elif token_losses and teacher is None and not has_cache:
            errors.error(
                "KD0301",
                f"`{token_losses[0].name}` needs a teacher distribution, and this train has none",
                token_losses[0].span,
                help="set `teacher = ...` (an hf model), or train on captured top-k logits (a "
                "`teacher_logits` stage, or a dataset of its exported rows)",
            )
        if hidden_losses and not isinstance(teacher, HFModel):
            loss = hidden_losses[0]
            errors.error(
                "KD0306",
                f"`{loss.name}` compares hidden states and needs an online `hf` teacher",
                loss.span,
                help="set `teacher = ...` to an hf model",
            )
        if has_cache and teacher is None:
            for loss in token_losses:
                if not loss.finite_against_topk():
                    errors.error(
                        "KD0307",
                        f"`{loss.name}` is infinite against a cached top-k teacher "
                        "(no teacher mass outside its k ids)",
                        loss.span,
                        help=f"use {_topk_losses()}, or an online teacher",
                    )
        if teacher is not None or has_cache:
            _check_topk_settings(token_losses, topk=has_cache and teacher is None, errors=errors)
        on_policy_high = bounds(train.on_policy)[1]
        if on_policy_high > 0 and (not isinstance(teacher, HFModel) or not token_losses):
            errors.error(
                "KD0303",
                "`on_policy` samples from the student and needs an online `hf` teacher and a "
                "token-level loss to score the samples",
                train.spans.get("on_policy", train.span),
            )
        if (token_losses or hidden_losses) and isinstance(student, HFModel):
            vocab_teacher = (
                teacher if isinstance(teacher, HFModel) else _stage_teacher(program, cached)
            )
            if isinstance(vocab_teacher, HFModel):
                _check_vocab(program, student, vocab_teacher, train, errors)


def _check_topk_settings(losses: list[ls.LossBase], *, topk: bool, errors: Collector) -> None:
    """Settings that only act against a cached top-k teacher are errors against an online one."""
    if topk:
        return
    for loss in losses:
        if "topk_mass" in loss.model_fields_set:
            errors.error(
                "KD0320",
                f"`topk_mass` has no effect here: `{loss.name}` compares with an online teacher's "
                "full distribution, which misses no mass",
                loss.spans.get("topk_mass", loss.span),
                help="remove `topk_mass`; it applies to a train on a `teacher_logits` stage's cache",
            )
        if getattr(loss, "reduction", None) == "topk_entries":
            errors.error(
                "KD0321",
                f"`reduction = topk_entries` needs a cached top-k teacher, and `{loss.name}` "
                "compares with an online teacher's full distribution",
                loss.spans.get("reduction", loss.span),
                help="use `reduction = token_mean`, or train on a `teacher_logits` stage's cache",
            )


INFINITE_LOGITS_LOSSES = ("forward_kl", "teacher_ce")
"""The divergences that weigh log p_S by p_T, infinite where a student logit is -inf."""


def _check_infinite_logits(train: tr.Train, errors: Collector) -> None:
    """``infinite_logits = zero`` acts on the losses it can change, on materialized logits."""
    for loss in train.losses:
        if getattr(loss, "infinite_logits", "keep") != "zero":
            continue
        span = loss.spans.get("infinite_logits", loss.span)
        if loss.name not in INFINITE_LOGITS_LOSSES:
            errors.error(
                "KD0345",
                f"`infinite_logits = zero` has no effect on `{loss.name}`, which stays finite "
                "where a student logit is -inf",
                span,
                help="remove it; it applies to `forward_kl` and `teacher_ce`",
            )
        elif train.loss_path == "fused_linear":
            errors.error(
                "KD0346",
                "`infinite_logits = zero` needs materialized logits, and `loss_path = "
                "fused_linear` computes them inside the fused kernel",
                span,
                help="set `loss_path = materialized` (or `auto`), or remove `infinite_logits`",
            )


def _stage_teacher(program: Program, stage: TeacherLogitsStage | None):
    return program.recipe.models.get(stage.teacher.name) if stage is not None else None


def _check_ranges(train: tr.Train, errors: Collector) -> None:
    checks: list[tuple[str, float | Schedule, Node]] = [("on_policy", train.on_policy, train)]
    for loss in train.losses:
        checks.append(("weight", loss.weight, loss))
        for field in ("temperature", "beta", "alpha"):
            if hasattr(loss, field) and not (field == "beta" and isinstance(loss, ls.DPOLoss)):
                checks.append((field, getattr(loss, field), loss))
    for field, value, node in checks:
        low, high, inclusive = RANGES[field]
        least, most = bounds(value)
        too_low = least < low if inclusive else least <= low
        too_high = high is not None and most > high
        if not (too_low or too_high):
            continue
        allowed = f"{'>=' if inclusive else '>'} {low}" + (
            f" and <= {high}" if high is not None else ""
        )
        span = node.spans.get(field, node.span)
        if isinstance(value, Schedule):
            errors.error(
                "KD0305",
                f"the `{field}` schedule goes from {value.start:g} to {value.end:g}, but `{field}` "
                f"must stay {allowed}",
                span,
            )
        else:
            errors.error("KD0104", f"`{field}` must be {allowed}, got {value:g}", span)


def _check_vocab(
    program: Program, student: HFModel, teacher: HFModel, train: tr.Train, errors: Collector
) -> None:
    a = vocab_digest_of(program.resolve(student.span.file, student.path))
    b = vocab_digest_of(program.resolve(teacher.span.file, teacher.path))
    if a is None or b is None or a == b:
        return  # not both local: the runtime compares the loaded tokenizers before the first step
    errors.error(
        "KD0302",
        f"the student `{train.student.name}` and the teacher do not share a vocabulary",
        train.student.span,
        notes=[("teacher declared here", teacher.span)],
        help="token-level losses need one tokenizer; use sequence-level KD (`loss sft`) across families",
    )


def vocab_digest_of(folder: Path) -> str | None:
    """A digest of a local model's token -> id table, read from its tokenizer files; None when
    there are none, or they cannot be read (loading the model will say why)."""
    if kind_of(folder) != "dir":
        return None
    try:
        return _read_vocab_digest(folder)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def _read_vocab_digest(folder: Path) -> str | None:
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        vocab = (data.get("model") or {}).get("vocab")
        added = sorted((t["content"], t["id"]) for t in data.get("added_tokens", []))
        if isinstance(vocab, list):  # unigram: [token, score] pairs
            vocab = {entry[0]: i for i, entry in enumerate(vocab)}
        payload = json.dumps([sorted((vocab or {}).items()), added])
        return hashlib.sha256(payload.encode()).hexdigest()
    vocab_json = folder / "vocab.json"
    if vocab_json.is_file():
        return hashlib.sha256(vocab_json.read_bytes()).hexdigest()
    return None


def _topk_losses() -> str:
    """The token-level losses a cached top-k teacher may suffice for, in words."""
    names = [name for name, cls in ls.LOSSES.items() if cls.accepts_topk]
    return ", ".join(names[:-1]) + " or " + names[-1]
