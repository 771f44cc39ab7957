"""Fixtures for the training pipeline tests: tiny models built once per session.

`tiny_model_dir` here shadows the root conftest's one, which needs the data dir and settings;
the pipeline tests need only a folder.
"""

from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_llama


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


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """Tiny BERT-like encoder (the shape of MiniLM) for classification."""
    from tests.tiny_model import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
