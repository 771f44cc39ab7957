"""The whole mission once, in a real browser: sign in, upload, map, train LoRA, watch, download,
and load the download with plain PEFT. Real uvicorn, a real Celery worker, the real Redis."""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.app.helpers import SAMPLE_CSV, bearer
from tests.conftest import TINY_MODEL_KEY

pytestmark = pytest.mark.usefixtures("worker_process")


def sign_in(page, email: str, password: str) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")


def upload_sample_and_open_training_form(page) -> int:
    page.click("text=Upload a dataset")
    page.set_input_files("input[type=file]", str(SAMPLE_CSV))
    page.click("#upload-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/datasets/\d+"))
    expect(page.locator("#row-count")).to_have_text("220")
    expect(page.locator("#preview tbody tr")).to_have_count(10)
    expect(page.locator("#preview")).to_contain_text("support@northwind-outdoor.example")
    return int(re.search(r"/datasets/(\d+)", page.url).group(1))


def fill_training_form(page, epochs: str, learning_rate: str, batch_size: str = "8") -> None:
    page.select_option("#prompt_column", "question")
    page.select_option("#response_column", "answer")
    page.select_option("#base_model", TINY_MODEL_KEY)
    page.select_option("#technique", "lora")
    form = page.locator("fieldset.params[data-technique=lora]")
    form.locator("input[name=param_epochs]").fill(epochs)
    form.locator("input[name=param_learning_rate]").fill(learning_rate)
    form.locator("input[name=param_batch_size]").fill(batch_size)


def test_csv_to_downloaded_adapter_in_the_browser(page, make_user, tiny_model_dir, tmp_path, live_server):
    _, email, password, token = make_user("e2e")
    sign_in(page, email, password)
    upload_sample_and_open_training_form(page)
    fill_training_form(page, epochs="1", learning_rate="0.003")
    page.click("#start-training")
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])

    # The live widget polls until the job ends, then renders without a trigger. (A generous
    # wait: on a loaded 2-core machine the 25 steps have taken over four minutes.)
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=480_000)
    status = page.locator("#job-status")
    assert status.get_attribute("hx-trigger") is None
    step_text = page.locator("#job-step").inner_text()
    done, total = (int(x) for x in step_text.split("/"))
    assert done == total > 10
    expect(page.locator("#loss-empty")).to_be_hidden()
    points = httpx.get(f"{live_server}/api/v1/jobs/{job_id}", headers=bearer(token)).json()["metrics"]
    assert points and points[-1]["loss"] < points[0]["loss"]

    with page.expect_download() as download_info:
        page.click("#download-adapter")
    archive = tmp_path / "adapter.zip"
    download_info.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
        assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
        zf.extractall(tmp_path / "adapter")
    _assert_adapter_changes_the_model(tiny_model_dir, tmp_path / "adapter")


def _assert_adapter_changes_the_model(base_dir: Path, adapter_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    inputs = tokenizer("How long do I have to return a jacket?", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        base_logits = base(**inputs).logits
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
    with torch.no_grad():
        tuned_logits = tuned(**inputs).logits
    assert tuned_logits.shape == base_logits.shape
    assert (tuned_logits - base_logits).abs().max().item() > 1e-2


def test_cancel_stops_a_running_job_and_keeps_its_metrics(page, make_user, tiny_model_dir, live_server):
    _, email, password, token = make_user("e2e-cancel")
    sign_in(page, email, password)
    upload_sample_and_open_training_form(page)
    fill_training_form(page, epochs="50", learning_rate="0.0005", batch_size="2")
    page.click("#start-training")
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#job-state")).to_have_text("running", timeout=120_000)
    expect(page.locator("#job-step")).not_to_have_text(re.compile(r"^0"), timeout=60_000)
    expect(page.locator("#job-progress")).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    clicked = time.monotonic()
    page.click("#cancel-job")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=30_000)
    assert time.monotonic() - clicked < 15
    assert page.locator("#job-status").get_attribute("hx-trigger") is None

    job = httpx.get(f"{live_server}/api/v1/jobs/{job_id}", headers=bearer(token)).json()
    assert job["status"] == "cancelled" and job["adapter_id"] is None
    assert len(job["metrics"]) >= 1 and job["step"] < job["total_steps"]
