"""Continuous batching with mixed adapters: exact against each request alone, joining mid-run,
seeds, stop strings."""

from __future__ import annotations

from tests.worker.serving.conftest import answer, events, finished, push, run_until

PROMPTS = ["The customer asked about the parcel", "Hello", "Our shop sends every order on monday and the invoice follows by email"]


def _run_tracking_batch(engine, client, ids) -> int:
    """Run until all are finished; returns the largest running batch seen."""
    largest = 0

    def done() -> bool:
        nonlocal largest
        largest = max(largest, len(engine.running))
        return all(finished(client, r) for r in ids)

    run_until(engine, done)
    return largest


def test_mixed_adapters_in_one_batch_equal_each_request_alone(engine_factory, make_lora, serve_client):
    first, second = make_lora(scale=3.0), make_lora(scale=3.0)
    targets = [first, second, None]
    alone = engine_factory()
    alone.eos_ids = set()
    solo_answers = []
    for adapter, prompt in zip(targets, PROMPTS, strict=True):
        rid = push(serve_client, alone.config.base_model, adapter=adapter, prompt=prompt, max_tokens=24)
        assert _run_tracking_batch(alone, serve_client, [rid]) == 1
        solo_answers.append(answer(serve_client, rid))

    mixed = engine_factory()
    mixed.eos_ids = set()
    ids = [push(serve_client, mixed.config.base_model, adapter=a, prompt=p, max_tokens=24) for a, p in zip(targets, PROMPTS, strict=True)]
    # the adapters load in the background first; then all three are admitted and decoded together
    assert _run_tracking_batch(mixed, serve_client, ids) == 3
    together = [answer(serve_client, r) for r in ids]
    assert [t for t, _ in together] == [t for t, _ in solo_answers]
    assert [d.completion_tokens for _, d in together] == [24, 24, 24]
    # and the adapters do change the answer (the same prompt differs under A, B and the base model)
    same_prompt = [push(serve_client, mixed.config.base_model, adapter=a, prompt=PROMPTS[0], max_tokens=24) for a in targets]
    _run_tracking_batch(mixed, serve_client, same_prompt)
    texts = [answer(serve_client, r)[0] for r in same_prompt]
    assert len(set(texts)) == 3, texts


def test_mixed_batch_matches_peft_generate(engine_factory, make_lora, serve_client):
    """The engine's greedy answer for an adapter equals PEFT's own set_adapter + generate."""
    import torch
    from peft import PeftModel

    from app.services.artifacts import get_artifact_store

    adapter = make_lora(scale=3.0)
    engine = engine_factory()
    engine.eos_ids = set()
    ids = [push(serve_client, engine.config.base_model, adapter=a, prompt=PROMPTS[2], max_tokens=16) for a in (adapter, None)]
    _run_tracking_batch(engine, serve_client, ids)
    text = answer(serve_client, ids[0])[0]

    from worker.training.loading import load_base_model

    base, tokenizer = load_base_model(_tiny_dir(), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(get_artifact_store().path(adapter.storage_key))).eval()
    inputs = tokenizer(PROMPTS[2], return_tensors="pt")
    out = peft_model.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    assert tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True) == text


def _tiny_dir():
    from tests.conftest import TINY_MODEL_KEY, harness

    return harness().data_dir / "models" / TINY_MODEL_KEY


def test_a_request_joins_a_running_batch_and_gets_its_first_token_early(engine_factory, serve_client):
    engine = engine_factory()
    engine.eos_ids = set()
    long = push(serve_client, engine.config.base_model, max_tokens=120)
    run_until(engine, lambda: len([e for e in events(serve_client, long) if e.type == "token"]) >= 5)
    short = push(serve_client, engine.config.base_model, prompt="Hello", max_tokens=4)
    run_until(engine, lambda: any(e.type == "token" for e in events(serve_client, short)))
    assert not finished(serve_client, long)
    assert len(engine.running) == 2
    run_until(engine, lambda: finished(serve_client, short))
    assert not finished(serve_client, long) and len(engine.running) == 1
    run_until(engine, lambda: finished(serve_client, long))
    assert answer(serve_client, long)[1].completion_tokens == 120


def test_the_same_seed_gives_the_same_text_alone_or_batched(engine_factory, serve_client):
    engine = engine_factory()
    engine.eos_ids = set()
    sampled = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 20}
    first = push(serve_client, engine.config.base_model, seed=7, **sampled)
    run_until(engine, lambda: finished(serve_client, first))
    again = push(serve_client, engine.config.base_model, seed=7, **sampled)
    other = push(serve_client, engine.config.base_model, seed=8, **sampled)
    neighbour = push(serve_client, engine.config.base_model, prompt="Hello there", seed=1, **sampled)
    run_until(engine, lambda: all(finished(serve_client, r) for r in (again, other, neighbour)))
    assert answer(serve_client, first)[0] == answer(serve_client, again)[0]
    assert answer(serve_client, first)[0] != answer(serve_client, other)[0]


def test_a_stop_string_ends_the_answer_before_it(engine_factory, serve_client):
    engine = engine_factory()
    engine.eos_ids = set()
    full = push(serve_client, engine.config.base_model, max_tokens=30)
    run_until(engine, lambda: finished(serve_client, full))
    text = answer(serve_client, full)[0]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    expected = text[: text.find(stop)]
    cut = push(serve_client, engine.config.base_model, max_tokens=30, stop=["never-there", stop])
    run_until(engine, lambda: finished(serve_client, cut))
    got, done = answer(serve_client, cut)
    assert got == expected and done.finish_reason == "stop" and done.completion_tokens < 30
