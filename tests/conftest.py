"""Shared pytest fixtures: tiny tokenizers and models (see ``tests/fixtures/tiny_models.py``).

All model fixtures are session-scoped and built once into a temporary directory; they are
created only when a test asks for them, so language-side tests never import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models gain nothing from intra-op threads, and OpenMP spin-waiting makes every matmul
# orders of magnitude slower when the cores are shared with other processes. Set before torch
# is imported anywhere; an explicit setting in the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where no CUDA device is present (torch imported only then)."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_chat_tokenizer_dir(tiny_root: Path) -> Path:
    """Byte-level BPE tokenizer with the ChatML-like ``CHAT_TEMPLATE``."""
    from tests.fixtures.tiny_models import build_tokenizer

    build_tokenizer(tiny_root / "tok_chat", chat_template=True)
    return tiny_root / "tok_chat"


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_root: Path) -> Path:
    """Same vocabulary as ``tiny_chat_tokenizer_dir``, no chat template, BOS prepended."""
    from tests.fixtures.tiny_models import build_tokenizer

    build_tokenizer(tiny_root / "tok_plain", chat_template=False)
    return tiny_root / "tok_plain"


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_root: Path, tiny_chat_tokenizer_dir: Path) -> Path:
    """Random tiny Llama (hidden 48, 2 layers) with the chat tokenizer."""
    from transformers import AutoTokenizer

    from tests.fixtures.tiny_models import build_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_tokenizer_dir)
    return build_model(tiny_root / "llama", tokenizer, arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tiny_root: Path, tiny_tokenizer_dir: Path) -> Path:
    """Random tiny GPT-2 (hidden 48, 2 layers) with the plain tokenizer (no chat template)."""
    from transformers import AutoTokenizer

    from tests.fixtures.tiny_models import build_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    return build_model(tiny_root / "gpt2", tokenizer, arch="gpt2", seed=0)


@pytest.fixture(scope="session")
def tiny_pair(tiny_root: Path):
    """``TinyPair(teacher, student, tokenizer)``: two Llamas sharing one vocabulary."""
    from tests.fixtures.tiny_models import build_teacher_student

    return build_teacher_student(tiny_root / "pair")


@pytest.fixture(scope="session")
def tiny_other_vocab_dir(tiny_root: Path) -> Path:
    """A GPT-2 whose vocabulary differs from ``tiny_pair``'s (for mismatch checks)."""
    from tests.fixtures.tiny_models import build_other_vocab_model

    return build_other_vocab_model(tiny_root / "other_vocab")
