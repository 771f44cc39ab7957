"""Closing the loop in a real browser: vote in a blind review, build a preference dataset from the
votes, start a DPO job continuing from the reviewed adapter on a real worker, see it finish, and
see the comparison page state its held-out reward accuracy with the interval and the verdict."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from app.db import session_scope
from app.models import Adapter, Job, User
from app.services.artifacts import get_artifact_store
from app.services.evaluations import evaluation_key
from tests.conftest import TINY_MODEL_KEY
from tests.e2e.test_browser_flow import sign_in

pytestmark = pytest.mark.usefixtures("worker_process")

PROMPTS = ["Where is my parcel?", "Can I return boots?", "Do you ship to Norway?", "Is gift wrap free?"]


def _reviewed_adapter(tiny_model_dir, workspace_id: int) -> int:
    """An instruction adapter of the workspace (a LoRA saved by plain PEFT) with stored evaluation
    answers to review: what a finished, evaluated job leaves (training one here would only be slow)."""
    import tempfile
    from pathlib import Path

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    store = get_artifact_store()
    folder = Path(tempfile.mkdtemp(prefix="e2e-parent-")) / "adapter"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    model.save_pretrained(str(folder))
    with session_scope() as db:
        adapter = Adapter(workspace_id=workspace_id, name="support sft", technique="lora", base_model=TINY_MODEL_KEY, storage_key="")
        db.add(adapter)
        db.flush()
        adapter.storage_key = f"adapters/e2e-{adapter.id}"
        adapter_id = adapter.id
    store.put_file(f"adapters/e2e-{adapter_id}", folder)
    rows = [
        {
            "prompt": p,
            "reference": "ref",
            "base": f"Sorry, no idea about that ({i}).",
            "adapter": f"Happy to help: {p.lower()} Yes, today ({i}).",
        }
        for i, p in enumerate(PROMPTS)
    ]
    tmp = store.temp_path(".json")
    tmp.write_text(
        json.dumps({"summary": {"rows": len(rows), "adapter": {}, "base": {}}, "rows": rows, "scores": {"adapter": {}, "base": {}}})
    )
    store.put_file(evaluation_key(adapter_id), tmp)
    return adapter_id


def test_votes_to_a_dpo_adapter_in_the_browser(page, make_user, tiny_model_dir):
    _, email, password, _ = user = make_user("pref-e2e")
    with session_scope() as db:
        workspace_id = db.get(User, user.id).workspace_id
    parent = _reviewed_adapter(tiny_model_dir, workspace_id)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    sign_in(page, email, password)
    for _ in range(8):  # the reviewer prefers the helpful answer, whichever side it is on
        page.goto(f"/review?ids={parent}")
        left = page.locator("#answer-left").inner_text()
        page.click("button[value=left]" if left.startswith("Happy") else "button[value=right]")
    page.goto(f"/review?ids={parent}")
    build = page.locator("#votes-dataset-here")
    expect(build).to_contain_text(re.compile(r"\d+ pairs?"))
    pairs = int(re.search(r"(\d+) pairs?", build.inner_text()).group(1))
    assert pairs >= 2, build.inner_text()
    build.click()
    expect(page).to_have_url(re.compile(r"/datasets/\d+\?task=preference"))

    # the form opens on the preference task with the columns guessed; chosen and rejected side by side
    expect(page.locator("#task")).to_have_value("preference")
    expect(page.locator("#preference_prompt_column")).to_have_value("prompt")
    expect(page.locator("#chosen_column")).to_have_value("chosen")
    expect(page.locator("#rejected_column")).to_have_value("rejected")
    page.select_option("#base_model", TINY_MODEL_KEY)
    page.select_option("#technique", "lora")
    expect(page.locator("#train-preview .side-by-side").first).to_be_visible(timeout=30_000)
    mapping = page.locator("fieldset.task-mapping[data-task=preference]")
    mapping.locator("select[name=parent_adapter_id]").select_option(str(parent))
    form = page.locator("fieldset.params[data-technique=lora]")
    page.select_option("#preset", "")
    form.locator("input[name=param_epochs]").fill("2")
    form.locator("input[name=param_learning_rate]").fill("0.003")
    form.locator("input[name=param_batch_size]").fill("4")
    form.locator("input[name=param_validation_fraction]").fill("0.3")
    page.click("#start-training")
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=480_000)
    expect(page.locator("#logps-card")).to_be_visible()
    job_id = int(page.url.rsplit("/", 1)[1])

    with session_scope() as db:
        assert db.get(Job, job_id).parent_adapter_id == parent
        child = db.query(Adapter).filter_by(job_id=job_id).one().id
    page.goto(f"/compare?ids={parent},{child}")
    accuracy = page.locator(f"#reward-accuracy tr[data-adapter='{child}'] .reward-accuracy")
    expect(accuracy).to_contain_text(re.compile(r"\d+% \[\d+%, \d+%\]"))
    expect(page.locator("#verdicts")).to_contain_text("rewards the preferred answer on")
    assert errors == []
