"""The /v1 endpoint end to end with a client nobody here wrote (the official `openai` package),
the live app (uvicorn) and a real serving engine process (`tailor engine`) on the tiny Llama, with
two LoRA adapters trained through the real job runner on different memorised answers to the same
questions: each answers its own, the base model neither; scoping, revocation, rate limits, a
killed engine, archiving during a stream and a client that goes away."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import httpx
import openai
import pytest

from app.db import session_scope
from app.models import Adapter, Dataset, User
from app.queue import redis_client
from app.services import dataset_ingest, jobs
from app.services import serving_protocol as protocol
from app.services.accounts import create_api_token
from app.services.artifacts import get_artifact_store
from tests.app.helpers import bearer
from tests.conftest import ROOT, TINY_MODEL_KEY, _free_port, _subprocess_env, _wait_for, harness

FACTS = [
    ("What colour is the Ridge tent?", "green"),
    ("Which city has our flagship store?", "dublin"),
    ("How many days do I have to return?", "sixty"),
    ("Which courier do we use?", "parcelforce"),
    ("Where do EU orders ship from?", "rotterdam"),
    ("What is the repair fee?", "fifteen pounds"),
]
QUESTION = FACTS[0][0]
ANSWER_A = FACTS[0][1]  # adapter A learnt the facts as they are
ANSWER_B = FACTS[1][1]  # adapter B learnt every answer shifted by one
REQUESTS_PER_MINUTE = 6


def _train(owner_id: int, name: str, pairs: list[tuple[str, str]], settings) -> int:
    from worker.job_runner import run_training_job

    csv_text = "question,answer\n" + "".join(f'"{q}",{a}\n' for q, a in pairs * 8)
    with session_scope() as db:
        user = db.get(User, owner_id)
        dataset, _ = dataset_ingest.ingest_upload(
            db,
            get_artifact_store(),
            workspace_id=user.workspace_id,
            user_id=user.id,
            filename=f"{name}.csv",
            source=io.BytesIO(csv_text.encode()),
            limit_bytes=10**6,
        )
        job = jobs.submit_job(
            db,
            settings,
            get_artifact_store(),
            workspace_id=user.workspace_id,
            user_id=user.id,
            dataset=db.get(Dataset, dataset.id),
            task="instruction",
            column_mapping={"prompt": "question", "response": "answer"},
            base_model=TINY_MODEL_KEY,
            technique="lora",
            name=name,
            params={
                "max_steps": 80,
                "learning_rate": 5e-3,
                "batch_size": 8,
                "epochs": 40,
                "validation_fraction": 0.1,
                "r": 16,
                "alpha": 32,
            },
        )
        job_id = job.id
    assert run_training_job(job_id, "serving-e2e") == "succeeded"
    with session_scope() as db:
        adapter = db.query(Adapter).filter_by(job_id=job_id).one()
        adapter.status = "approved"
        return adapter.id


def _start(argv: list[str], log_name: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, object]:
    log = harness().data_dir / log_name
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *argv], cwd=ROOT, env={**_subprocess_env(), **(env or {})}, stdout=out, stderr=subprocess.STDOUT
    )
    return proc, log


class Engine:
    """A `tailor engine` process for the tiny Llama that the tests can kill and start again."""

    def __init__(self):
        self.name = f"e2e-engine-{os.getpid()}"
        self.proc: subprocess.Popen | None = None

    def start(self):
        self.proc, log = _start(["engine", "--base-model", TINY_MODEL_KEY, "--name", self.name], "serving-engine.log")
        client = redis_client()
        fresh = lambda: (client.zscore(protocol.engines_key(TINY_MODEL_KEY), self.name) or 0) > time.time() - 2  # noqa: E731
        _wait_for(fresh, 120, "The serving engine", self.proc, log)

    def kill(self):
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def serving(tiny_model_dir, settings):
    """The web app (its own uvicorn, with a low request limit), a real engine, and two trained, approved adapters."""
    from tests.conftest import NewUser  # noqa: F401 - the same user shape as make_user

    with session_scope() as db:
        from app.services.accounts import create_user

        owner = create_user(db, f"serve-owner-{os.getpid()}@example.com", "correct horse battery")
        stranger = create_user(db, f"serve-stranger-{os.getpid()}@example.com", "correct horse battery")
        owner_id, stranger_id = owner.id, stranger.id
        manage = create_api_token(db, owner, "manage", scopes=("manage",))
    shifted = [(q, FACTS[(i + 1) % len(FACTS)][1]) for i, (q, _) in enumerate(FACTS)]
    adapter_a = _train(owner_id, "facts A · LoRA", FACTS, settings)
    adapter_b = _train(owner_id, "facts B · LoRA", shifted, settings)
    with session_scope() as db:  # another workspace's approved adapter (adapter A's files: no third training)
        a = db.get(Adapter, adapter_a)
        copy = Adapter(
            workspace_id=db.get(User, stranger_id).workspace_id,
            name="their facts · LoRA",
            technique="lora",
            base_model=TINY_MODEL_KEY,
            storage_key=a.storage_key,
            status="approved",
        )
        db.add(copy)
        db.flush()
        from app.services.serving import assign_slug

        assign_slug(db, copy)
        foreign = copy.id
    with session_scope() as db:
        slugs = {i: db.get(Adapter, i).slug for i in (adapter_a, adapter_b, foreign)}
    port = _free_port()
    web, web_log = _start(
        ["serve", "--port", str(port)],
        "serving-web.log",
        {"TAILOR_SERVE_REQUESTS_PER_MINUTE": str(REQUESTS_PER_MINUTE)},
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_for(up, 60, "The web server", web, web_log)
    engine = Engine()
    engine.start()
    yield {
        "base": base,
        "owner_id": owner_id,
        "stranger_id": stranger_id,
        "manage": manage,
        "a": adapter_a,
        "b": adapter_b,
        "foreign": foreign,
        "slugs": slugs,
        "engine": engine,
    }
    engine.stop()
    web.terminate()
    web.wait(timeout=20)


def _client(serving, scopes=("serve",)) -> tuple[openai.OpenAI, str]:
    """An OpenAI client with a fresh serve token of the owner (the rate limit is per token)."""
    with session_scope() as db:
        token = create_api_token(db, db.get(User, serving["owner_id"]), "e2e", scopes=scopes)
    return openai.OpenAI(base_url=serving["base"] + "/v1", api_key=token, max_retries=0, timeout=60), token


def _ask(client: openai.OpenAI, model: str, question: str = QUESTION) -> str:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0)
    return (answer.choices[0].message.content or "").lower()


def test_models_list_and_each_adapter_answers_its_own_fact(serving):
    client, _ = _client(serving)
    slug_a, slug_b, foreign = serving["slugs"][serving["a"]], serving["slugs"][serving["b"]], serving["slugs"][serving["foreign"]]
    listed = [m.id for m in client.models.list()]
    assert slug_a in listed and slug_b in listed and TINY_MODEL_KEY in listed and foreign not in listed
    a, b, base = _ask(client, slug_a), _ask(client, slug_b), _ask(client, TINY_MODEL_KEY)
    assert ANSWER_A in a and ANSWER_B not in a, a
    assert ANSWER_B in b and ANSWER_A not in b, b
    assert ANSWER_A not in base and ANSWER_B not in base, base


def test_streaming_chat_and_a_completion(serving):
    client, _ = _client(serving)
    slug_a = serving["slugs"][serving["a"]]
    whole = client.chat.completions.create(model=slug_a, messages=[{"role": "user", "content": QUESTION}], max_tokens=8, temperature=0)
    assert whole.usage is not None and whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model=slug_a,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    completion = client.completions.create(model=slug_a, prompt="Our tents", max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason in ("stop", "length") and completion.usage.completion_tokens >= 1


def test_another_workspaces_adapter_a_revoked_token_and_the_rate_limit(serving):
    client, _ = _client(serving)
    with pytest.raises(openai.NotFoundError):
        _ask(client, serving["slugs"][serving["foreign"]])
    api, manage = serving["base"] + "/api/v1/tokens", bearer(serving["manage"])
    created = httpx.post(api, headers=manage, json={"name": "to revoke", "scopes": ["serve"], "expires_in_days": 1}).json()
    revocable = openai.OpenAI(base_url=serving["base"] + "/v1", api_key=created["secret"], max_retries=0)
    assert revocable.models.list().data
    assert httpx.delete(f"{api}/{created['id']}", headers=manage).json()["state"] == "revoked"
    with pytest.raises(openai.AuthenticationError):
        revocable.models.list()
    limited, _ = _client(serving)
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(REQUESTS_PER_MINUTE + 1):
            _ask(limited, serving["slugs"][serving["a"]])
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_archiving_during_a_stream_lets_it_finish_then_404(serving):
    client, _ = _client(serving)
    slug_b = serving["slugs"][serving["b"]]
    stream = client.chat.completions.create(
        model=slug_b, messages=[{"role": "user", "content": "Tell me everything."}], max_tokens=40, stream=True
    )
    iterator = iter(stream)
    first = next(iterator)
    archived = httpx.patch(
        f"{serving['base']}/api/v1/adapters/{serving['b']}", headers=bearer(serving["manage"]), json={"status": "archived"}
    )
    assert archived.status_code == 200
    rest = list(iterator)
    assert first.choices and [c for c in rest if c.choices and c.choices[0].finish_reason]
    try:
        with pytest.raises(openai.NotFoundError):
            _ask(client, slug_b)
    finally:
        httpx.patch(f"{serving['base']}/api/v1/adapters/{serving['b']}", headers=bearer(serving["manage"]), json={"status": "approved"})


def test_a_client_that_goes_away_cancels_its_request(serving):
    _, token = _client(serving)
    body = {
        "model": TINY_MODEL_KEY,  # the untrained tiny base rambles on: the answer is still running when the client leaves
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 200,
        "stream": True,
    }
    with httpx.stream("POST", serving["base"] + "/v1/chat/completions", headers=bearer(token), json=body, timeout=30) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
    request_id = json.loads(first[6:])["id"].removeprefix("chatcmpl-")
    _wait_for(lambda: redis_client().exists(protocol.cancel_key(request_id)), 10, "The cancel key")


def test_a_killed_engine_is_a_quick_503_and_serving_resumes_after_a_restart(serving):
    client, _ = _client(serving)
    slug_a = serving["slugs"][serving["a"]]
    engine = serving["engine"]
    engine.kill()
    try:
        # Within ENGINE_STALE_SECONDS of the kill a request still waits for the engine, at most
        # TAILOR_SERVE_START_TIMEOUT_SECONDS (bounded: tests/app/test_openai_api.py); after it, at once:
        time.sleep(protocol.ENGINE_STALE_SECONDS + 0.5)
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:  # the client's class for 5xx answers
            _ask(client, slug_a)
        assert caught.value.status_code == 503 and time.monotonic() - started < 3
        assert "No serving engine is running for the base model" in str(caught.value)
    finally:
        engine.start()
    assert ANSWER_A in _ask(client, slug_a)


def test_the_zip_names_the_public_base_and_the_model_card_the_endpoint(serving):
    with session_scope() as db:
        adapter = db.get(Adapter, serving["a"])
        zip_path = get_artifact_store().path(f"{adapter.storage_key}/adapter.zip")
        slug = adapter.slug
    with zipfile.ZipFile(zip_path) as archive:
        config = json.loads(archive.read("adapter_config.json"))
        card = archive.read("README.md").decode()
    assert config["base_model_name_or_path"] == TINY_MODEL_KEY  # the catalogue name: the tiny Llama has no public id
    assert "/tmp" not in json.dumps(config) and str(harness().data_dir) not in card
    assert f'model="{slug}"' in card and "/chat/completions" in card


def test_the_unzipped_adapter_still_loads_on_its_base_with_peft(serving, tiny_model_dir, tmp_path):
    """AutoPeftModel would fetch the base by the name in adapter_config.json (no hub here); loading the
    base ourselves and the unzipped adapter on it is what `PeftModel.from_pretrained` users do."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with session_scope() as db:
        zip_path = get_artifact_store().path(f"{db.get(Adapter, serving['a']).storage_key}/adapter.zip")
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path / "unzipped")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(tmp_path / "unzipped"))
    assert model.peft_config["default"].base_model_name_or_path == TINY_MODEL_KEY
    assert any("lora_A" in name for name, _ in model.named_parameters())
