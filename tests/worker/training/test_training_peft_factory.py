"""Technique key + parameters -> PEFT model."""

import pytest
from peft import LoraConfig, PeftModel

from worker.training.loading import load_base_model
from worker.training.peft_factory import BUILDERS, build_peft_config, build_peft_model


@pytest.fixture
def tiny_model(tiny_model_dir):
    model, _ = load_base_model(tiny_model_dir)
    return model


def test_lora_wraps_all_linear_layers_with_the_given_rank(tiny_model):
    model = build_peft_model(tiny_model, "lora", {"r": 4, "alpha": 8, "dropout": 0.0})
    assert isinstance(model, PeftModel)
    config = model.peft_config["default"]
    assert isinstance(config, LoraConfig)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.0)
    trainable, total = model.get_nb_trainable_parameters()
    # 4 layers x (q,k,v,o: 256->256, gate,up: 256->768, down: 768->256), each r*(in+out).
    per_layer = 4 * 4 * (256 + 256) + 3 * 4 * (256 + 768)
    assert trainable == 4 * per_layer
    assert all(not p.requires_grad for name, p in model.named_parameters() if "lora_" not in name)
    assert total > trainable


def test_target_modules_accepts_a_comma_separated_string(tiny_model):
    config = build_peft_config(tiny_model, "lora", {"target_modules": "q_proj, v_proj"})
    assert set(config.target_modules) == {"q_proj", "v_proj"}


def test_unknown_technique_names_the_known_ones(tiny_model):
    with pytest.raises(ValueError, match="lora"):
        build_peft_model(tiny_model, "magic", {})
    assert "lora" in BUILDERS


def test_attention_choice_adapts_only_the_attention_projections(tiny_model):
    model = build_peft_model(tiny_model, "lora", {"r": 4, "target_modules": "attention"})
    config = model.peft_config["default"]
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == 4 * 4 * 4 * (256 + 256)


def test_technique_differences_are_hooks_on_their_builder_entries():
    from worker.training.peft_factory import FULL_FINE_TUNING, quantization_bits
    from worker.training.saving import AdapterFiles, PlainLoraFromPissaFiles, WholeModelFiles

    assert quantization_bits("qlora", {}) == 4 and quantization_bits("qlora", {"bits": "8"}) == 8
    assert quantization_bits("lora", {"bits": "8"}) == 0 and quantization_bits("magic", {}) == 0
    assert {key for key, entry in BUILDERS.items() if not entry.packs_examples} == {"prompt_tuning", "prefix_tuning", "p_tuning"}
    assert [key for key, entry in BUILDERS.items() if entry.after_optimizer_step] == ["adalora"]
    assert [key for key, entry in BUILDERS.items() if entry.fp32_weights] == [FULL_FINE_TUNING]
    assert BUILDERS[FULL_FINE_TUNING].files is WholeModelFiles
    assert BUILDERS["pissa"].files is PlainLoraFromPissaFiles and BUILDERS["lora"].files is AdapterFiles


def test_full_fine_tuning_trains_every_weight_and_has_no_peft_config(tiny_model):
    from worker.training.peft_factory import FULL_FINE_TUNING

    for parameter in tiny_model.parameters():
        parameter.requires_grad_(False)
    model = build_peft_model(tiny_model, FULL_FINE_TUNING, {})
    assert model is tiny_model and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="no PEFT config"):
        build_peft_config(tiny_model, FULL_FINE_TUNING, {})
