"""Closing the loop in a real browser: vote in a blind review, build a preference dataset from the
votes, start a DPO job continuing from the reviewed adapter on a real worker, see it finish, and
see the comparison page state its held-out reward accuracy with the interval and the verdict."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import TINY_MODEL_KEY
from tests.e2e.test_browser_flow import sign_in
from tests.worker.evaluation.conftest import facts_owner, train_adapter  # noqa: F401 (fixtures)
from worker.evaluation.runner import evaluate_adapter

pytestmark = pytest.mark.usefixtures("worker_process")


def test_votes_to_a_dpo_adapter_in_the_browser(page, facts_owner, train_adapter):  # noqa: F811
    _, email, password, _, dataset_id = facts_owner
    parent = train_adapter(dataset_id, "facts sft", max_steps=12)
    evaluate_adapter(parent, max_rows=4)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    sign_in(page, email, password)
    for _ in range(8):  # the sides are anonymous; any decided vote makes a pair
        page.goto(f"/review?ids={parent}")
        left, right = page.locator("#answer-left").inner_text(), page.locator("#answer-right").inner_text()
        page.click("button[value=left]" if len(left) >= len(right) else "button[value=right]")
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
    form.locator("input[name=param_epochs]").fill("3")
    form.locator("input[name=param_learning_rate]").fill("0.003")
    form.locator("input[name=param_batch_size]").fill("4")
    form.locator("input[name=param_validation_fraction]").fill("0.3")
    page.click("#start-training")
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=480_000)
    expect(page.locator("#logps-card")).to_be_visible()
    job_id = int(page.url.rsplit("/", 1)[1])

    from app.db import session_scope
    from app.models import Adapter, Job

    with session_scope() as db:
        assert db.get(Job, job_id).parent_adapter_id == parent
        child = db.query(Adapter).filter_by(job_id=job_id).one().id
    page.goto(f"/compare?ids={parent},{child}")
    accuracy = page.locator(f"#reward-accuracy tr[data-adapter='{child}'] .reward-accuracy")
    expect(accuracy).to_contain_text(re.compile(r"\d+% \[\d+%, \d+%\]"))
    expect(page.locator("#verdicts")).to_contain_text("rewards the preferred answer on")
    assert errors == []
