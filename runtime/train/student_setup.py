"""How a train prepares its student beyond loading it: frozen modules (``freeze``), the
embedding rows padded to a multiple (``pad_vocab_to_multiple``), and the near names a module
name that is not the student's is told about."""

from __future__ import annotations

import difflib

import torch
from torch import nn

from ..errors import RunError


def module_names(model: nn.Module) -> list[str]:
    """The qualified names of the model's modules and their last parts, deduplicated."""
    names = [name for name, _ in model.named_modules() if name]
    return list(dict.fromkeys(names + [name.rsplit(".", 1)[-1] for name in names]))


def near(model: nn.Module, wanted: str, count: int = 5) -> list[str]:
    """The student's module names that come nearest to ``wanted``."""
    return difflib.get_close_matches(wanted, module_names(model), n=count, cutoff=0.4)


def unknown_module(model: nn.Module, setting: str, wanted: str) -> RunError:
    found = near(model, wanted)
    hint = f"; near names: {', '.join(found)}" if found else ""
    return RunError(f"{setting}: the student has no module `{wanted}`{hint}")


def freeze(model: nn.Module, names: list[str]) -> int:
    """Stop training every parameter of the modules ``names`` name: a qualified name
    (``model.layers.0``) or its last parts (``embed_tokens``, ``layers.0.mlp``), matching every
    module whose name ends so. Returns how many parameters were frozen; :class:`RunError` for a
    name no module has (with the near names) and when nothing trainable is left."""
    modules = dict(model.named_modules())
    frozen = 0
    for wanted in names:
        hits = [m for name, m in modules.items() if name == wanted or name.endswith("." + wanted)]
        if not hits:
            raise unknown_module(model, "freeze", wanted)
        for module in hits:
            for p in module.parameters():
                if p.requires_grad:
                    p.requires_grad_(False)
                    frozen += 1
    if not any(p.requires_grad for p in model.parameters()):
        raise RunError(f"freeze: {', '.join(names)} leave nothing of the student to train")
    return frozen


def pad_vocab(model: nn.Module, tokenizer, multiple: int, seed: int) -> int:
    """Resize the input and output embeddings to a multiple of ``multiple`` rows, at least the
    tokenizer's size and never fewer than the model has (new rows: transformers' mean
    initialisation, drawn from ``seed``). Returns the new row count."""
    rows = model.get_input_embeddings().weight.shape[0]
    wanted = max(rows, len(tokenizer))
    target = -(-wanted // multiple) * multiple
    if target != rows:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.resize_token_embeddings(target, pad_to_multiple_of=multiple)
    return target
