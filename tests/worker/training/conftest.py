"""Fixtures for the training pipeline tests: tiny models built once per session."""

import sys
from pathlib import Path

import pytest

# `tests.tiny_model` lives at the repository root's tests/; make it importable however pytest
# was started (plain `pytest` does not put the root on sys.path).
REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.tiny_model import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Tiny Llama whose tokenizer has no chat template (plain prompt format)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory) -> Path:
    """Tiny Llama with a ChatML chat template and <|im_end|> as EOS."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-chat"), chat=True)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from worker.training.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_chat_tokenizer(tiny_chat_model_dir):
    from worker.training.loading import load_tokenizer

    return load_tokenizer(tiny_chat_model_dir)
