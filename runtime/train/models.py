"""The student and what surrounds it: loading (with LoRA via peft), vocabulary checks, the
optimizer, precision, and the choice of loss path."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import torch
from torch import nn

from ..errors import RunError


def load_student(
    settings: dict[str, Any],
    lora=None,
    *,
    device: torch.device,
    seed: int,
    init=None,
    pad_vocab_to: int | None = None,
    freeze: list[str] | None = None,
):
    """``(model, tokenizer)`` of a student from the settings of its ``hf`` model
    (:meth:`kdlang.runtime.context.StageContext.model_settings`).

    Weights load in float32 unless the model declares another dtype (``auto`` trains fp32
    master weights; bf16 arithmetic comes from autocast). With ``lora`` the base weights are
    frozen and peft adapters are added (initialised from ``seed``). ``init`` (``init_from``, a
    folder): the weights start from it (:func:`.init_from.start_from`). ``pad_vocab_to``: the
    embeddings are padded to a multiple of it before LoRA; ``freeze``: those modules' weights
    are not trained (:mod:`.student_setup`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..teachers.hf import DTYPES, _dtype_kw, attention_kw
    from .init_from import kind_of_start, start_from
    from .student_setup import freeze as freeze_modules
    from .student_setup import pad_vocab

    dtype = torch.float32 if settings.get("dtype", "auto") == "auto" else DTYPES[settings["dtype"]]
    common = {
        "revision": settings.get("revision"),
        "trust_remote_code": settings.get("trust_remote_code", False),
    }
    tokenizer = AutoTokenizer.from_pretrained(settings["path"], **common)
    start = kind_of_start(init) if init is not None else None
    weights = str(init) if start == "model" else settings["path"]
    model = AutoModelForCausalLM.from_pretrained(
        weights, **common, **_dtype_kw(dtype), **attention_kw(settings.get("attention", "auto"))
    )
    stored = _stored_dtype(settings["path"], common)
    model.kdlang_save_dtype = stored if stored in (torch.bfloat16, torch.float16) else dtype
    if start == "model":
        start_from(model, init, "model", settings["path"], common)
    if pad_vocab_to is not None:
        pad_vocab(model, tokenizer, pad_vocab_to, seed)
    if lora is not None:
        model = add_lora(model, lora, seed)
    if start in ("checkpoint", "adapter"):
        model = start_from(model, init, start, settings["path"], common)
    if freeze:
        freeze_modules(model, freeze)
    return model.to(device), tokenizer


def _stored_dtype(path: str, common: dict) -> torch.dtype | None:
    """The dtype of the weights on disk (as the config records it)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **common)
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else None


def save_student(model: nn.Module, tokenizer, out) -> dict[str, str]:
    """Write the trained student: ``out/model`` (full weights, LoRA merged in, in the dtype
    the student was stored in) and, for a LoRA student, ``out/adapter`` (the adapter alone).
    Returns the folders written, by role."""
    written = {}
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        written["adapter"] = "adapter"
        model = model.merge_and_unload()
    dtype = getattr(model, "kdlang_save_dtype", None)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    written["model"] = "model"
    return written


def add_lora(model: nn.Module, lora, seed: int) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters (``r``, ``alpha``, ``dropout``,
    ``target_modules``; peft picks the modules of known architectures when none are named;
    ``all_linear``: every linear layer but the output head), DoRA's magnitudes with ``dora``,
    and full trainable copies of ``modules_to_save``. A module name peft cannot find is a
    :class:`RunError` naming the student's modules that come near."""
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if lora.target_modules == "all_linear" else lora.target_modules
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        use_dora=lora.dora,
        modules_to_save=lora.modules_to_save,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    try:
        return get_peft_model(model, config)
    except ValueError as error:  # a target module the model does not have
        from .student_setup import unknown_module

        missing = [t for t in (lora.modules_to_save or []) if not _has(model, t)]
        if isinstance(lora.target_modules, list):
            missing = [t for t in lora.target_modules if not _has(model, t)] + missing
        if missing:
            raise unknown_module(model, "lora", missing[0]) from None
        raise RunError(f"lora: {error}") from None


def _has(model: nn.Module, name: str) -> bool:
    return any(n == name or n.endswith("." + name) for n, _ in model.named_modules())


def chat_enabled(tokenizer, chat_template: str) -> bool:
    """Whether prompts go through the chat template, as :class:`HFTeacher` decides it."""
    if chat_template not in ("auto", "none"):
        tokenizer.chat_template = chat_template
    return chat_template != "none" and bool(getattr(tokenizer, "chat_template", None))


def vocab_digest(tokenizer) -> str:
    """A digest of the token → id table (added tokens included)."""
    table = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(table).encode()).hexdigest()


def check_same_vocab(student_tokenizer, teacher_tokenizer, student: str, teacher: str) -> None:
    """Token-level terms compare distributions id by id: both tokenizers must map every token
    to the same id. Raises :class:`RunError` naming a difference otherwise."""
    a, b = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if a == b:
        return
    only_a = sorted(set(a) - set(b))[:3]
    only_b = sorted(set(b) - set(a))[:3]
    moved = sorted(t for t in set(a) & set(b) if a[t] != b[t])[:3]
    detail = (
        f"{len(a)} vs {len(b)} tokens"
        + (f"; only in the student: {only_a}" if only_a else "")
        + (f"; only in the teacher: {only_b}" if only_b else "")
        + (f"; different ids for {moved}" if moved else "")
    )
    raise RunError(
        f"the student `{student}` and the teacher `{teacher}` do not share a vocabulary "
        f"({detail}); token-level and hidden-state losses need one tokenizer — use `loss sft` "
        "across model families"
    )


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model itself: inside its peft wrapper when it has one."""
    inner = getattr(model, "get_base_model", None)
    return inner() if callable(inner) else model


def head(model: nn.Module) -> nn.Linear:
    """The lm_head (output embeddings) of a transformers model, through peft wrappers."""
    return base_model(model).get_output_embeddings()


def enable_gradient_checkpointing(student: nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (transformers' own
    checkpointing, non-reentrant: it needs no input that requires a gradient, so LoRA students
    work as they are)."""
    base = base_model(student)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise RunError(f"{type(base).__name__} does not support gradient_checkpointing")
    options = {"use_reentrant": False}
    enable = getattr(base, "activation_checkpointing_enable", None)  # its newer name
    if enable is not None:
        enable(activation_checkpointing_kwargs=options)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    if getattr(base.config, "use_cache", False):
        base.config.use_cache = False  # a cache is of no use while training


def shared_width(student_head: nn.Linear, teacher_head: nn.Linear | None, vocab: int) -> int | None:
    """Vocabulary rows to compare when the two heads have different (padded) widths: the
    smaller one, which must still hold every token of the tokenizer. ``None`` when equal."""
    if teacher_head is None or teacher_head.out_features == student_head.out_features:
        return None
    width = min(teacher_head.out_features, student_head.out_features)
    if width < vocab:
        raise RunError(
            f"the lm_heads have {student_head.out_features} (student) and "
            f"{teacher_head.out_features} (teacher) rows, fewer than the {vocab} tokens"
        )
    return width


def loss_path(train, vocab: int) -> tuple[str, str]:
    """``(path, reason)``: the choice ``kdlang plan`` shows
    (:meth:`kdlang.ir.training.Train.choose_loss_path`), made with the loaded student's
    vocabulary."""
    return train.choose_loss_path(vocab)


def supports_fused(model: nn.Module) -> bool:
    """The fused path needs ``logits_to_keep`` (head on the last position only) and a plain
    linear head (no logit soft-capping)."""
    import inspect

    base = base_model(model)
    config = getattr(base, "config", None)
    if getattr(config, "final_logit_softcapping", None):
        return False
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def precision(setting: str, device: torch.device):
    """A context manager for the forward passes: bf16 autocast for ``bf16`` and for ``auto`` on
    CUDA, nothing (fp32) otherwise."""
    if setting == "bf16" or (setting == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def optimizer(modules: list[nn.Module], train) -> torch.optim.AdamW:
    """AdamW over every trainable parameter; weight decay on matrices only (not on biases,
    norms or other vectors)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": train.weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    # One fused kernel per step on CUDA (fewer launches, no temporaries the size of the
    # weights); the same update as the default implementation.
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas), fused=fused or None)


def trainable_state(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The trainable parameters by qualified name: what a checkpoint must restore (frozen
    weights come back from the model's files)."""
    return {
        f"{prefix}.{name}": p.detach().cpu().clone()
        for prefix, module in modules.items()
        for name, p in module.named_parameters()
        if p.requires_grad
    }


def load_trainable(modules: dict[str, nn.Module], state: dict[str, torch.Tensor]) -> None:
    params = {
        f"{prefix}.{name}": p
        for prefix, module in modules.items()
        for name, p in module.named_parameters()
        if p.requires_grad
    }
    if set(params) != set(state):
        missing = sorted(set(params) ^ set(state))[:3]
        raise RunError(f"the checkpoint does not match the model (e.g. {missing}); delete it")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name].to(p.device, p.dtype))
