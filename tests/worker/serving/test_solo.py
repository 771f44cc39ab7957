"""Adapters PEFT cannot mix in a batch (IA3, prompt tuning) are served one at a time on the solo
lane, with PEFT's own generate, while LoRA requests keep decoding in the batch."""

from __future__ import annotations

import pytest

from tests.worker.serving.conftest import answer, finished, push, run_until

PROMPT = "The customer asked about the parcel"


def _peft_greedy(tiny_model_dir, ref, max_tokens: int) -> str:
    import torch
    from peft import PeftModel

    from app.services.artifacts import get_artifact_store
    from worker.training.loading import load_base_model

    base, tokenizer = load_base_model(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(get_artifact_store().path(ref.storage_key))).eval()
    inputs = tokenizer(PROMPT, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("technique", ["ia3", "prompt_tuning"])
def test_a_solo_adapter_answers_like_peft_beside_a_lora_batch(
    technique, engine_factory, make_adapter, make_lora, serve_client, tiny_model_dir
):
    from peft import IA3Config, PromptTuningConfig

    config = (
        IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
        if technique == "ia3"
        else PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    )
    solo_ref, lora_ref = make_adapter(config), make_lora(scale=3.0)
    engine = engine_factory()
    engine.eos_ids = set()
    solo = push(serve_client, engine.config.base_model, adapter=solo_ref, prompt=PROMPT, max_tokens=12)
    lora = push(serve_client, engine.config.base_model, adapter=lora_ref, prompt=PROMPT, max_tokens=12)
    run_until(engine, lambda: finished(serve_client, solo) and finished(serve_client, lora), timeout=120)
    text, done = answer(serve_client, solo)
    assert done.type == "done" and done.completion_tokens == 12
    assert text == _peft_greedy(tiny_model_dir, solo_ref, 12)
    assert answer(serve_client, lora)[1].type == "done"
