"""The offline assets of ``multi_gpu.py``: a word-level tokenizer, a random-init student and
teacher saved in bf16, and a JSONL dataset whose every row tokenizes to exactly ``seq`` tokens.

:func:`build_assets` runs in a process of its own (``spawn``), so that the GPU memory it takes
is freed before the measured runs start; it imports torch and transformers only there.
"""

from __future__ import annotations

import json
from pathlib import Path

import shapes
from shapes import STUDENT, TEACHER

PROMPT_WORDS = 64
"""Words of a row's prompt (at most half the row); the rest of the row is its target."""
UNK, BOS, EOS, PAD = "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"


def llama_config(shape: dict, vocab: int, small: bool, seq: int, specials: dict):
    return shapes.llama_config(
        shape,
        vocab,
        small=small,
        max_position_embeddings=max(8192, seq),
        bos_token_id=specials[BOS],
        eos_token_id=specials[EOS],
        pad_token_id=specials[PAD],
    )


def build_assets(spec: dict) -> None:
    """Write the tokenizer, the two models and the dataset into ``spec["work"]`` and what was
    built into ``assets.json`` (run in a process of its own, so that its GPU memory is freed
    before the runs)."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()
    work, seq, small = Path(spec["work"]), spec["seq"], spec["small"]
    vocab = shapes.vocab(small)
    words = [f"w{i}" for i in range(vocab - 4)]
    table = {token: i for i, token in enumerate([UNK, BOS, EOS, PAD, *words])}
    core = Tokenizer(models.WordLevel(table, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNK, eos_token=EOS, pad_token=PAD
    )

    device = torch.device("cuda" if spec["device"] == "cuda" else "cpu")
    info = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "vocab": vocab,
    }
    for index, (name, shape) in enumerate((("student", STUDENT), ("teacher", TEACHER))):
        config = llama_config(shape, vocab, small, seq, table)
        torch.manual_seed(spec["seed"] + index)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with device:
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
        folder = work / "models" / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        info[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "hidden": config.hidden_size,
            "layers": config.num_hidden_layers,
        }
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # Rows of random words: the plain prompt (no special tokens), then the target and its EOS.
    prompt_words = min(PROMPT_WORDS, seq // 2)
    generator = np.random.default_rng(spec["seed"])
    picks = generator.integers(0, len(words), size=(spec["rows"], seq - 1))
    rows = [
        {
            "prompt": " ".join(words[i] for i in row[:prompt_words]),
            "target": " ".join(words[i] for i in row[prompt_words:]),
        }
        for row in picks
    ]
    data = work / "data" / "rows.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    # As the training loop will read them: loaded from the model folder, the prompt with the
    # tokenizer's usual special tokens, the target without, EOS appended.
    loaded = AutoTokenizer.from_pretrained(work / "models" / "student")
    prompts = loaded([r["prompt"] for r in rows], add_special_tokens=True)["input_ids"]
    targets = loaded([r["target"] for r in rows], add_special_tokens=False)["input_ids"]
    lengths = {len(p) + len(t) + 1 for p, t in zip(prompts, targets, strict=True)}
    for ok, problem in (
        (len(loaded) == vocab, f"the tokenizer has {len(loaded)} entries, not {vocab}"),
        (loaded.eos_token_id == table[EOS] and loaded.pad_token_id == table[PAD], "eos/pad"),
        (not getattr(loaded, "chat_template", None), "a chat template: prompts must stay plain"),
        (lengths == {seq}, f"rows tokenize to {sorted(lengths)} tokens, not {seq}"),
        (all(table[UNK] not in p + t for p, t in zip(prompts, targets, strict=True)), "<unk>"),
    ):
        if not ok:
            raise RuntimeError(f"the tokenizer or the data is wrong: {problem}")
    info.update(rows=len(rows), prompt_tokens=prompt_words, target_tokens=seq - prompt_words)
    (work / "assets.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
