"""Device layouts (issue 13): parsing the Devices field, choosing DDP / FSDP / QLoRA + FSDP with a
reason, memory per device, refusing what cannot fit or needs a Ray cluster; the form and the API."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from app.db import session_scope
from app.domain.layouts import GB, RAY_HELP, DeviceRequest, LayoutError, parse_devices, plan_layout
from app.models import WorkerNode
from app.services import job_layouts
from app.services.workers import DeviceInfo, parse_gpu_list, record_worker_heartbeat
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import sign_in

# Llama-3-70B's shape, and a tiny one.
BIG = {
    "hidden_size": 8192,
    "num_hidden_layers": 80,
    "vocab_size": 128256,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "model_type": "llama",
}
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "vocab_size": 3000,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "model_type": "llama",
}
PARAMS = {"batch_size": 8, "max_length": 512}


def _plan(config, devices, technique="lora", **kw):
    kw.setdefault("device_kind", "cuda")
    kw.setdefault("device_memory_bytes", 24 * GB)
    kw.setdefault("devices_on_machine", 8)
    return plan_layout(config, technique, PARAMS, task="instruction", n_rows=1000, tokens_per_row=200, request=parse_devices(devices), **kw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", DeviceRequest()),
        ("", DeviceRequest()),
        ("all", DeviceRequest(1, None)),
        ("4", DeviceRequest(1, 4)),
        ("2x4", DeviceRequest(2, 4)),
        ("3 × 2", DeviceRequest(3, 2)),
    ],
)
def test_the_devices_field_reads_one_all_n_and_k_by_m(text, expected):
    assert parse_devices(text) == expected


@pytest.mark.parametrize("text", ["two", "0x4", "2x0", "x4", "1x2x3", "-1"])
def test_unreadable_devices_get_a_plain_message(text):
    with pytest.raises(LayoutError, match="Devices"):
        parse_devices(text)


def test_a_model_that_fits_one_device_is_replicated_with_ddp_and_says_why():
    plan = _plan(TINY, "4")
    assert (plan.strategy, plan.world, plan.fits, plan.refusal) == ("ddp", 4, True, None)
    assert "fit one device" in plan.reason and "DDP on 4 devices" in plan.reason
    one = _plan(TINY, "1")
    assert one.strategy == "single" and one.seconds > plan.seconds  # four devices are faster


def test_only_the_steps_spread_over_the_devices_the_setup_is_the_single_estimates():
    """A layout's time is the one-device estimate's setup (loading, tokenizing, saving: the same
    figures, measured or calibrated, as every estimate) plus its steps shared by the devices."""
    from app.domain.estimates import WorkerClass, estimate_job
    from app.domain.layouts import EFFICIENCY

    worker = WorkerClass("cuda", memory_bytes=24 * GB)
    whole = estimate_job(TINY, "lora", PARAMS, task="instruction", n_rows=1000, tokens_per_row=200, worker=worker)
    plan = _plan(TINY, "4")
    steps = whole.train_seconds + whole.held_out_seconds
    assert plan.seconds == pytest.approx(whole.setup_seconds + steps / (4 * EFFICIENCY["ddp"]))


def test_a_model_too_big_for_one_device_is_sharded_with_fsdp_with_the_numbers():
    plan = _plan(BIG, "all")  # 8 x 24 GB
    assert plan.strategy == "fsdp" and plan.world == 8 and plan.fits is True
    assert "more than 21.6 GB of its 24.0 GB" in plan.reason and "FSDP over 8 devices" in plan.reason
    assert plan.per_device_memory_bytes < 24 * GB * 0.9 < _plan(BIG, "4").per_device_memory_bytes


def test_a_layout_that_cannot_fit_is_refused_with_the_numbers():
    plan = _plan(BIG, "2")
    assert plan.fits is False
    assert plan.refusal.startswith("This layout needs about ") and "on each of its 2 devices (FSDP)" in plan.refusal
    assert "of the 24.0 GB each has" in plan.refusal


def test_cpu_offload_lowers_fsdp_memory_per_gpu_and_is_off_elsewhere():
    sharded, offloaded = _plan(BIG, "4", strategy="fsdp"), _plan(BIG, "4", strategy="fsdp", cpu_offload=True)
    assert offloaded.cpu_offload and offloaded.per_device_memory_bytes < sharded.per_device_memory_bytes
    ddp = _plan(TINY, "2", strategy="ddp", cpu_offload=True)
    assert not ddp.cpu_offload and "CPU offload applies only to FSDP on GPUs" in ddp.reason


def test_a_4bit_base_is_qlora_fsdp_on_gpus_and_refused_on_cpus():
    plan = _plan(BIG, "4", technique="qlora", quantized_bits=4)
    assert plan.strategy == "qlora_fsdp" and plan.fits is True and plan.per_device_memory_bytes < _plan(BIG, "4").per_device_memory_bytes
    cpu = _plan(TINY, "2", technique="qlora", quantized_bits=4, device_kind="cpu", strategy="fsdp")
    assert cpu.refusal and "needs CUDA GPUs" in cpu.refusal


def test_overrides_and_what_fsdp_cannot_shard():
    assert _plan(TINY, "2", strategy="fsdp").strategy == "fsdp"
    assert _plan(BIG, "8", strategy="ddp").strategy == "ddp" and _plan(BIG, "8", strategy="ddp").fits is False
    refused = _plan(TINY, "2", technique="prompt_tuning", strategy="fsdp")
    assert refused.refusal and "LoRA-family" in refused.refusal
    with pytest.raises(LayoutError):
        _plan(TINY, "2", strategy="zero3")


def test_several_machines_need_a_ray_cluster():
    assert _plan(TINY, "2x4").refusal == RAY_HELP
    plan = _plan(TINY, "2x4", cluster_configured=True)
    assert plan.refusal is None and (plan.machines, plan.devices_per_machine, plan.world) == (2, 4, 8)


def test_nvidia_smi_lines_become_the_selected_devices():
    out = "0, NVIDIA H200, 143771\n1, NVIDIA H200, 143771\n2, NVIDIA H200, 143771\n"
    assert [d["index"] for d in parse_gpu_list(out)] == ["0", "1", "2"]
    chosen = parse_gpu_list(out, "0,2")
    assert [d["index"] for d in chosen] == ["0", "2"] and chosen[0]["memory_bytes"] == 143771 * 2**20 and chosen[0]["kind"] == "cuda"


# --------------------------------------------------------------------------- through the API and the pages


def _body(dataset_id: int, **extra) -> dict:
    return {
        "dataset_id": dataset_id,
        "column_mapping": {"prompt": "question", "response": "answer"},
        "base_model": "tiny-llama",
        "technique": "lora",
        "params": {"max_steps": 1},
        **extra,
    }


def test_the_api_plans_refuses_and_shows_layouts(client, make_user, tiny_model_dir):
    _, _, _, token = make_user("layouts")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    for devices, message in (("2x2", "need a Ray cluster"), ("lots", "Devices must be")):
        refused = client.post("/api/v1/jobs", headers=bearer(token), json=_body(dataset["id"], devices=devices))
        assert refused.status_code == 422 and message in refused.json()["detail"]["errors"]["devices"]
    refused = client.post(
        "/api/v1/jobs", headers=bearer(token), json=_body(dataset["id"], devices="2", technique="prompt_tuning", strategy="fsdp")
    )
    assert refused.status_code == 422 and "LoRA-family" in refused.json()["detail"]["errors"]["devices"]
    accepted = client.post("/api/v1/jobs", headers=bearer(token), json=_body(dataset["id"], devices="2"))
    assert accepted.status_code == 201, accepted.text
    job = accepted.json()
    client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(token))
    assert job["layout"]["world"] == 2 and job["layout"]["strategy"] == "ddp" and job["layout"]["request"] == "2"
    assert job["result"]["estimate"]["layout"]["world"] == 2


def test_a_worker_advertises_each_device_on_the_board(client, make_user):
    user_id, email, password, token = make_user("boards")
    with session_scope() as db:  # machine names and devices are shown to instance administrators only
        from app.models import User

        db.get(User, user_id).is_admin = True
    devices = tuple({"index": str(i), "name": "Test GPU", "kind": "cuda", "memory_bytes": (i + 1) * GB} for i in range(2))
    with session_scope() as db:
        device = DeviceInfo("cuda:0 Test GPU", GB, devices, allocator="jemalloc")
        record_worker_heartbeat(db, name="two-gpus@tests", queues="gpu", device=device)
    try:
        board = client.get("/api/v1/workers", headers=bearer(token)).json()
        shown = next(w for w in board["workers"] if w["name"] == "two-gpus@tests")
        assert [d["index"] for d in shown["devices"]] == ["0", "1"] and shown["allocator"] == "jemalloc"
        sign_in(client, email, password)
        page = client.get("/workers")
        assert page.status_code == 200
        row = page.text.split('data-worker="two-gpus@tests"')[1].split("</tr>")[0]
        assert "0: Test GPU" in row and "1: Test GPU" in row and "2.0 GB" in row and "allocator: jemalloc" in row
    finally:
        with session_scope() as db:
            db.execute(delete(WorkerNode).where(WorkerNode.name == "two-gpus@tests"))


def test_the_form_offers_devices_and_its_estimate_shows_the_layout(client, make_user, tiny_model_dir):
    _, email, password, token = make_user("devform")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    csrf = sign_in(client, email, password)
    page = client.get(f"/datasets/{dataset['id']}").text
    assert 'name="devices_mode"' in page and "K machines × M devices" in page and 'id="ray-help"' in page
    form = {
        "csrf_token": csrf,
        "dataset_id": dataset["id"],
        "base_model": "tiny-llama",
        "technique": "lora",
        "task": "instruction",
        "prompt_column": "question",
        "response_column": "answer",
        "devices_mode": "all",
    }
    estimate = client.post("/jobs/estimate", data=form).text
    assert 'id="estimate-layout"' in estimate and "Memory per device" in estimate
    estimate = client.post("/jobs/estimate", data={**form, "devices_mode": "machines", "machines": "2", "per_machine": "2"}).text
    assert "need a Ray cluster" in estimate
    refused = client.post("/jobs", data={**form, "devices_mode": "machines", "machines": "2", "per_machine": "2"})
    assert refused.status_code == 422 and 'id="devices-error"' in refused.text and "need a Ray cluster" in refused.text
    assert '<option value="machines" selected>' in refused.text  # the form comes back as it was sent


def test_the_job_page_shows_each_ranks_memory_to_its_workspace_only(client, make_user, tiny_model_dir):
    _, email, password, token = make_user("rankpage")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    job = client.post("/api/v1/jobs", headers=bearer(token), json=_body(dataset["id"], devices="2")).json()
    ranks = {
        0: {"host": "gpu-a", "pid": 11, "memory_bytes": 3 * GB, "step": 4},
        1: {"host": "gpu-b", "pid": 12, "memory_bytes": 2 * GB, "step": 4},
    }
    with session_scope() as db:
        job_layouts.record_ranks(db, job["id"], ranks)
    try:
        assert client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(token)).json()["ranks"]["1"]["host"] == "gpu-b"
        sign_in(client, email, password)
        page = client.get(f"/jobs/{job['id']}").text
        table = page.split('id="job-ranks"')[1].split("</table>")[0]
        assert 'data-rank="0"' in table and "gpu-a" in table and "3.0 GB" in table and "gpu-b" in table
        assert "DDP" in page and "Tokens/s counts every rank" in page
        _, _, _, other = make_user("rankpage-other")
        assert client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(other)).status_code == 404
    finally:
        client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(token))


def test_task_kinds_without_a_sharded_step_are_refused_on_several_devices(settings):
    from app.domain.task_kinds import TASK_KINDS
    from app.models import Dataset

    one_device = [key for key, kind in TASK_KINDS.items() if not kind.multi_device]
    assert set(one_device) == {"preference", "feedback"}
    dataset = Dataset(name="d", profile={})
    for key in one_device:
        with pytest.raises(LayoutError, match="one device"):
            job_layouts.plan_for(None, settings, dataset, None, "lora", {}, key, {}, devices="2")
