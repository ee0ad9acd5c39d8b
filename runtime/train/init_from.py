"""``init_from = "folder"``: the student starts from weights another run made.

Three kinds of folder are accepted, told apart by what they hold:

- ``checkpoint``: a checkpoint of another train (``ckpt-<step>`` with ``weights.pt`` and
  ``state.pt``, :mod:`.checkpoint`). Its trainable weights are copied into the student, which
  must have the same trainable parameters (the same model, the same LoRA). Its optimizer state,
  step and data position are not taken: the train starts at step 0.
- ``adapter``: a peft adapter (``adapter_config.json`` with ``adapter_model.safetensors``), as a
  LoRA export with ``merge_lora = false`` or any peft training writes. A student with ``lora``
  loads the adapter's weights into its own adapters (the same ``r`` and target modules); a
  student without it trains the adapter as it is (its own LoRA settings).
- ``model``: a model folder (``config.json`` and weights, as an export writes it): the student's
  weights load from there, its tokenizer from the student's own path. The two configurations
  must describe the same architecture and vocabulary.

Which files the folder holds is part of the train's fingerprint (by content): a changed folder
trains again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import RunError

SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "n_embd", "n_layer")
"""The configuration entries a model folder must share with the student's."""


def kind_of_start(folder: Path) -> str:
    """``checkpoint``, ``adapter`` or ``model``: what ``folder`` is (:class:`RunError` when it
    is none of them)."""
    if not folder.is_dir():
        raise RunError(f"init_from: {folder} is not a folder")
    if (folder / "weights.pt").is_file() and (folder / "state.pt").is_file():
        return "checkpoint"
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "model"
    raise RunError(
        f"init_from: {folder} is neither a checkpoint (weights.pt, state.pt), a peft adapter "
        "(adapter_config.json) nor a model folder (config.json)"
    )


def start_from(model: nn.Module, folder: Path, kind: str, path: str, common: dict) -> nn.Module:
    """The student ``model`` with the weights of ``folder`` (of ``kind``); ``path`` and
    ``common``: where the student's own configuration comes from."""
    if kind == "model":
        _same_architecture(model, folder, path, common)
        return model
    if kind == "checkpoint":
        _load_checkpoint(model, folder)
        return model
    return _load_adapter(model, folder)


def _same_architecture(model: nn.Module, folder: Path, path: str, common: dict) -> None:
    from transformers import AutoConfig

    own = AutoConfig.from_pretrained(path, **common).to_dict()
    theirs = model.config.to_dict()
    differ = [
        f"{key} {theirs.get(key)} (not {own.get(key)})"
        for key in SHAPE_KEYS
        if key in own and own.get(key) != theirs.get(key)
    ]
    if differ:
        raise RunError(
            f"init_from: the model in {folder} is not the student's architecture: "
            + ", ".join(differ)
        )


def _load_checkpoint(model: nn.Module, folder: Path) -> None:
    saved = torch.load(folder / "weights.pt", map_location="cpu", weights_only=False)
    weights = {
        name[len("student.") :]: tensor
        for name, tensor in saved["trainable"].items()
        if name.startswith("student.")
    }
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(weights):
        only_ours = sorted(set(params) - set(weights))
        only_theirs = sorted(set(weights) - set(params))
        lora_there = any(".lora_" in name for name in weights)
        lora_here = any(".lora_" in name for name in params)
        hint = ""
        if lora_there != lora_here:
            hint = (
                "; the checkpoint holds LoRA adapters, the student does not"
                if lora_there
                else "; the student has LoRA adapters, the checkpoint does not"
            )
        raise RunError(
            f"init_from: the checkpoint {folder} does not hold the student's trainable weights "
            f"({len(weights)} there, {len(params)} here; e.g. "
            f"{(only_ours or only_theirs)[:2]}){hint}"
        )
    with torch.no_grad():
        for name, p in params.items():
            if tuple(weights[name].shape) != tuple(p.shape):
                raise RunError(
                    f"init_from: `{name}` is {tuple(weights[name].shape)} in {folder}, "
                    f"{tuple(p.shape)} in the student"
                )
            p.copy_(weights[name].to(p.dtype))


def _load_adapter(model: nn.Module, folder: Path) -> nn.Module:
    from peft import PeftModel, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    if not hasattr(model, "peft_config"):  # no `lora` on the student: train this adapter
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    own = model.peft_config["default"]
    if config.get("r") != own.r:
        raise RunError(
            f"init_from: the adapter in {folder} has r = {config.get('r')}, the student's "
            f"lora r = {own.r}; give the same r (or remove `lora` to train the adapter as it is)"
        )
    weights = load_peft_weights(str(folder), device="cpu")
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as error:  # shapes that differ
        raise RunError(f"init_from: the adapter in {folder} does not fit: {error}") from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if ".lora_" in k]
    if unexpected or missing:
        raise RunError(
            f"init_from: the adapter in {folder} targets other modules than the student's lora "
            f"(e.g. {(unexpected or missing)[:2]})"
        )
    return model
