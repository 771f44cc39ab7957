"""The technique catalogue validates parameters with plain messages."""

import pytest

from app.domain.techniques import CATALOGUE, ParameterError, get_technique, validate_params


def test_defaults_fill_every_parameter():
    lora = get_technique("lora")
    params = validate_params(lora, {})
    assert params["r"] == 8 and params["learning_rate"] == 2e-4 and params["target_modules"] == "all-linear"
    assert set(params) == {p.name for p in lora.all_params}


@pytest.mark.parametrize(
    "raw, field, words",
    [
        ({"learning_rate": "5"}, "learning_rate", "at most 1"),
        ({"learning_rate": "nan"}, "learning_rate", "must be a number"),
        ({"epochs": "1e9"}, "epochs", "at most 50"),
        ({"r": "2.5"}, "r", "whole number"),
        ({"batch_size": 0}, "batch_size", "at least 1"),
        ({"target_modules": "everything"}, "target_modules", "one of all-linear, attention"),
        ({"bogus": 1}, "bogus", "not a parameter"),
    ],
)
def test_absurd_values_are_refused_with_a_plain_message(raw, field, words):
    with pytest.raises(ParameterError) as info:
        validate_params(get_technique("lora"), raw)
    assert words in info.value.errors[field]


def test_unknown_technique_is_refused():
    with pytest.raises(ParameterError) as info:
        get_technique("magic")
    assert "Unknown technique" in info.value.errors["technique"]


def test_api_lists_the_catalogue(client, make_user):
    _, _, _, token = make_user()
    body = client.get("/api/v1/techniques", headers={"Authorization": f"Bearer {token}"}).json()
    assert [t["key"] for t in body] == list(CATALOGUE)
    lora = body[0]
    assert lora["name"] == "LoRA" and "instruction" in lora["task_kinds"]
    rank = next(p for p in lora["params"] if p["name"] == "r")
    assert rank["default"] == 8 and rank["minimum"] == 1 and rank["help"]


# ---------------------------------------------------------------- the form and the catalogue's rules

import json  # noqa: E402

from app.domain.estimates import estimate_job  # noqa: E402
from app.domain.techniques import PRESETS, preset_params, tasks_for_model, unavailable_reason  # noqa: E402
from app.models import Job  # noqa: E402
from tests.app.helpers import SAMPLE_CSV, bearer, upload  # noqa: E402
from tests.conftest import sign_in  # noqa: E402

BERT_CONFIG = {
    "model_type": "bert",
    "architectures": ["BertForMaskedLM"],
    "hidden_size": 384,
    "intermediate_size": 1536,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "vocab_size": 30522,
}


def test_encoders_only_classify_and_refuse_prefix_tuning_with_a_reason():
    assert tasks_for_model(BERT_CONFIG) == ("classification",)
    assert "decoder" in unavailable_reason(get_technique("prefix_tuning"), "classification", BERT_CONFIG)
    assert "encoder" in unavailable_reason(get_technique("lora"), "instruction", BERT_CONFIG)
    assert unavailable_reason(get_technique("lora"), "classification", BERT_CONFIG) is None


def test_the_worker_takes_its_defaults_from_the_catalogue():
    # One source of defaults: what the form shows is what the worker trains with when a value is missing.
    from worker.training.spec import resolve_params

    for key, technique in CATALOGUE.items():
        assert resolve_params(key, None) == technique.defaults()
    assert resolve_params("lora", {})["epochs"] == get_technique("lora").param("epochs").default == 2
    assert resolve_params("vera", {})["r"] == get_technique("vera").param("r").default
    assert resolve_params("prompt_tuning", {})["num_virtual_tokens"] == 20
    assert resolve_params("lora", {"epochs": 5, "extra": 1})["epochs"] == 5 and resolve_params("lora", {"extra": 1})["extra"] == 1
    with pytest.raises(ValueError, match="Unknown technique"):
        resolve_params("nope", {})


def test_cuda_only_and_odd_sized_quantization_are_refused_on_a_cpu_worker():
    from dataclasses import replace

    cuda_only = replace(get_technique("lora"), requires_cuda=True)
    assert "GPU" in unavailable_reason(cuda_only, "instruction", {"model_type": "llama"}, worker_has_cuda=False)
    odd = {"model_type": "llama", "hidden_size": 100, "intermediate_size": 256}
    assert "multiples of 32" in unavailable_reason(get_technique("qlora"), "instruction", odd)
    assert unavailable_reason(get_technique("qlora"), "instruction", odd, worker_has_cuda=True) is None


def test_every_entry_explains_itself_and_has_presets_for_its_tasks():
    for technique in CATALOGUE.values():
        assert len(technique.description) > 80 and technique.typical_adapter_size and technique.memory_needs
        for task in technique.task_kinds:
            quick, thorough = (preset_params(technique, task, 300, name) for name in ("quick", "thorough"))
            validate_params(technique, quick), validate_params(technique, thorough)
            assert quick.get("epochs", 1) <= thorough.get("epochs", 1)
    assert (
        preset_params(get_technique("lora"), "instruction", 100, "balanced")["epochs"]
        > preset_params(get_technique("lora"), "instruction", 50_000, "balanced")["epochs"]
    )
    assert set(PRESETS) == {"quick", "balanced", "thorough"}


def test_estimates_scale_with_the_technique():
    config = {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    }
    common = dict(task="instruction", n_rows=220, tokens_per_row=100)
    lora = estimate_job(config, "lora", validate_params(get_technique("lora"), {}), **common)
    full = estimate_job(config, "full", validate_params(get_technique("full"), {}), **common)
    qlora = estimate_job(config, "qlora", validate_params(get_technique("qlora"), {}), quantized_bits=4, **common)
    assert abs(lora.total_parameters - 134_515_008) / 134_515_008 < 0.01  # SmolLM2-135M
    assert lora.trainable_parameters == 30 * 8 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert full.peak_memory_bytes > lora.peak_memory_bytes > qlora.peak_memory_bytes
    assert full.seconds > lora.seconds and full.adapter_bytes > 20 * lora.adapter_bytes


def test_the_form_offers_tasks_presets_and_an_estimate(client, make_user, tiny_model_dir):
    _, email, password, token = make_user()
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    csrf = sign_in(client, email, password)
    page = client.get(f"/datasets/{dataset['id']}").text
    assert 'name="task"' in page and 'id="label_column"' in page and 'id="text_columns"' in page
    assert 'id="preset"' in page and 'id="train-estimate"' in page and "Trainable parameters" in page
    availability = json.loads(page.split('id="train-availability">')[1].split("</script>")[0])
    assert availability["tiny-llama"]["tasks"] == ["instruction", "text", "classification", "preference", "feedback"]
    # The category column is guessed as the label.
    assert '<option value="category" selected>' in page.split('id="label_column"')[1].split("</select>")[0]

    estimate = client.post(
        "/jobs/estimate",
        data={
            "csrf_token": csrf,
            "dataset_id": dataset["id"],
            "task": "classification",
            "class_text_column": "question",
            "label_column": "category",
            "base_model": "tiny-llama",
            "technique": "ia3",
        },
        headers={"HX-Request": "true"},
    )
    assert estimate.status_code == 200 and 'id="train-estimate"' in estimate.text and "GB" in estimate.text


def test_a_classification_job_starts_from_the_form_with_its_estimate(client, make_user, db, tiny_model_dir):
    _, email, password, token = make_user()
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    csrf = sign_in(client, email, password)
    page = client.post(
        "/jobs",
        data={
            "csrf_token": csrf,
            "dataset_id": dataset["id"],
            "task": "classification",
            "class_text_column": "question",
            "label_column": "category",
            "base_model": "tiny-llama",
            "technique": "lora",
            "preset": "quick",
            "param_max_steps": "2",
        },
    )
    assert page.status_code == 200 and page.url.path.startswith("/jobs/"), page.text[:300]
    job = db.get(Job, int(page.url.path.rsplit("/", 1)[1]))
    assert job.task == "classification" and job.column_mapping == {"text": "question", "label": "category"}
    assert job.result["estimate"]["trainable_parameters"] > 0
    client.post(f"/api/v1/jobs/{job.id}/cancel", headers=bearer(token))

    api = client.post(
        "/api/v1/jobs",
        headers=bearer(token),
        json={
            "dataset_id": dataset["id"],
            "task": "text",
            "column_mapping": {"text_columns": ["answer"]},
            "base_model": "tiny-llama",
            "technique": "prompt_tuning",
            "preset": "quick",
        },
    )
    assert api.status_code == 201, api.text
    assert api.json()["params"]["epochs"] == 1 and api.json()["column_mapping"] == {"text_columns": ["answer"]}
    client.post(f"/api/v1/jobs/{api.json()['id']}/cancel", headers=bearer(token))
