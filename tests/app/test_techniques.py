"""The technique catalogue validates parameters with plain messages."""

import pytest

from app.techniques import CATALOGUE, ParameterError, get_technique, validate_params


def test_defaults_fill_every_parameter():
    lora = get_technique("lora")
    params = validate_params(lora, {})
    assert params["r"] == 8 and params["learning_rate"] == 2e-4 and params["target_modules"] == "all-linear"
    assert set(params) == {p.name for p in lora.all_params}


@pytest.mark.parametrize("raw, field, words", [
    ({"learning_rate": "5"}, "learning_rate", "at most 1"),
    ({"learning_rate": "nan"}, "learning_rate", "must be a number"),
    ({"epochs": "1e9"}, "epochs", "at most 50"),
    ({"r": "2.5"}, "r", "whole number"),
    ({"batch_size": 0}, "batch_size", "at least 1"),
    ({"target_modules": "everything"}, "target_modules", "one of all-linear, attention"),
    ({"bogus": 1}, "bogus", "not a parameter"),
])
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
