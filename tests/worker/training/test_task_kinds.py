"""Each task kind trains for real on the tiny models: instruction with a system message,
continued training on long texts, classification on a causal and on an encoder model."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from tests.worker.training.test_training_loop import MEMO_ROWS, Recorder
from worker.training.data import collate, render_prompt, tokenize_classification, tokenize_texts
from worker.training.loop import run_training
from worker.training.saving import LABELS_FILE
from worker.training.spec import TrainingSpec

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

_ITEMS = "jacket shirt coat dress sleeve collar pocket card".split()
# The label follows from the words used, as in real tickets.
CLASS_ROWS = [
    row
    for item in _ITEMS
    for row in (
        (f"I want to return the {item} and get my money back.", "returns"),
        (f"When will my {item} order arrive? It has not shipped yet.", "orders"),
    )
]


def _train(model_dir, tmp_path, task, rows, technique="lora", **params):
    recorder = Recorder()
    spec = TrainingSpec(
        base_model_dir=str(model_dir),
        technique=technique,
        params={
            "learning_rate": 3e-3,
            "epochs": 50,
            "batch_size": 8,
            "max_steps": 15,
            "warmup_ratio": 0.0,
            "checkpoint_minutes": 0,
            **params,
        },
        train_rows=rows,
        validation_rows=rows[:4],
        output_dir=str(tmp_path / "adapter"),
        task=task,
    )
    run = run_training(spec, recorder)
    losses = [p.loss for p in recorder.progress]
    assert run.result.status == "completed" and len(losses) == 15
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    return run


def test_instruction_rows_may_carry_a_system_message(tiny_chat_model_dir, tiny_chat_tokenizer, tmp_path):
    rendered = render_prompt(tiny_chat_tokenizer, "Where is my parcel?", "You are Northwind's support agent.")
    assert "<|im_start|>system\nYou are Northwind's support agent.<|im_end|>" in rendered
    rows = [(q, a, "Answer as Northwind support.") for q, a in MEMO_ROWS]
    run = _train(tiny_chat_model_dir, tmp_path, "instruction", rows)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert run.result.validation_loss < run.result.train_loss * 2


def test_text_task_chunks_long_texts_and_learns_them(tiny_model_dir, tiny_tokenizer, tmp_path):
    long_text = " ".join(a for _, a in MEMO_ROWS)  # ~200 tokens: several chunks of 48
    chunks = tokenize_texts(tiny_tokenizer, [long_text, "Short note."], max_length=48).examples
    assert len(chunks) >= 4 and all(len(c) <= 48 for c in chunks)
    assert all(c.labels == c.input_ids for c in chunks)  # loss on every token
    run = _train(tiny_model_dir, tmp_path, "text", [(a,) for _, a in MEMO_ROWS], max_length=48)
    assert run.result.tokens_seen > 0


@pytest.mark.parametrize("model_fixture", ["tiny_model_dir", "tiny_bert_dir"])
def test_classification_trains_a_head_and_saves_the_label_map(model_fixture, request, tmp_path):
    model_dir = request.getfixturevalue(model_fixture)
    run = _train(model_dir, tmp_path, "classification", CLASS_ROWS, learning_rate=1e-2)
    out = tmp_path / "adapter"
    labels = json.loads((out / LABELS_FILE).read_text())["id2label"]
    assert labels == {"0": "orders", "1": "returns"}
    assert run.result.label_names == ["orders", "returns"] and run.result.validation_accuracy == 1.0

    _assert_plain_reload_reproduces_logits(run, model_dir, out)


def _assert_plain_reload_reproduces_logits(run, model_dir, out):
    """Plain transformers + PEFT reload gives the trained logits."""
    examples = tokenize_classification(run.tokenizer, CLASS_ROWS[:4], 64, ["orders", "returns"]).examples
    batch = collate(examples, run.tokenizer.pad_token_id)
    run.model.eval()
    with torch.no_grad():
        trained = run.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    base = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=2, dtype=torch.float32)
    base.config.pad_token_id = run.tokenizer.pad_token_id
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        again = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(again, trained, rtol=1e-4, atol=1e-4)


def test_prefix_tuning_on_an_encoder_is_refused_in_plain_words(tiny_bert_dir, tmp_path):
    spec = TrainingSpec(
        base_model_dir=str(tiny_bert_dir),
        technique="prefix_tuning",
        params={"max_steps": 1},
        train_rows=CLASS_ROWS,
        validation_rows=CLASS_ROWS[:2],
        output_dir=str(tmp_path / "a"),
        task="classification",
    )
    with pytest.raises(ValueError, match="decoder"):
        run_training(spec, Recorder())


# The encoder side of the technique matrix: techniques that apply to an encoder classifier.
# Prompt-based techniques are refused for encoder classification (their reload does not give the
# trained logits back; see unavailable_reason and the test below).
ENCODER_MATRIX = {"ia3": {"learning_rate": 1e-2}, "loha": {}, "lokr": {}, "dora": {}}


@pytest.mark.parametrize("technique", list(ENCODER_MATRIX))
def test_encoder_classification_with_more_techniques(technique, tiny_bert_dir, tmp_path):
    run = _train(
        tiny_bert_dir, tmp_path, "classification", CLASS_ROWS, technique=technique, **{"learning_rate": 1e-2, **ENCODER_MATRIX[technique]}
    )
    _assert_plain_reload_reproduces_logits(run, tiny_bert_dir, tmp_path / "adapter")


def test_prompt_techniques_are_refused_for_encoder_classification(tiny_bert_dir):
    from app.domain.techniques import get_technique, unavailable_reason

    config = json.loads((tiny_bert_dir / "config.json").read_text())
    reason = unavailable_reason(get_technique("prompt_tuning"), "classification", config)
    assert reason and "does not yet reload reliably" in reason
    assert unavailable_reason(get_technique("lora"), "classification", config) is None


def test_every_registered_task_kind_has_a_training_and_a_preview_function():
    # Adding a task kind is one TaskKind entry plus these two functions: neither may be missing.
    from app.domain.task_kinds import TASK_KEYS
    from app.services.prompt_preview import PREVIEWS
    from worker.training.data import TOKENIZERS

    assert set(TOKENIZERS) == set(TASK_KEYS)
    assert set(PREVIEWS) == set(TASK_KEYS)


def test_an_unknown_task_kind_is_refused_by_the_worker():
    from worker.training.data import tokenize_for_task

    with pytest.raises(ValueError, match="Unknown task 'chat'"):
        tokenize_for_task(None, "chat", [("a", "b")], 16)
