"""The results pages in a real browser: the comparison draws its charts, the playground streams
answers from a real worker, and no page logs a JavaScript error."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_browser_flow import sign_in
from tests.worker.evaluation.conftest import FACTS, facts_owner, train_adapter  # noqa: F401 (fixtures)
from worker.evaluation.runner import evaluate_adapter

pytestmark = pytest.mark.usefixtures("worker_process")


def test_compare_and_playground_in_the_browser(page, facts_owner, train_adapter, tmp_path):  # noqa: F811
    _, email, password, _, dataset_id = facts_owner
    first = train_adapter(dataset_id, "facts r16", max_steps=50, r=16, alpha=32)
    second = train_adapter(dataset_id, "facts r4", max_steps=50, r=4, alpha=8)
    for adapter_id in (first, second):
        evaluate_adapter(adapter_id, max_rows=6)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    sign_in(page, email, password)
    page.goto("/adapters")
    page.check(f"input[name=ids][value='{first}']")
    page.check(f"input[name=ids][value='{second}']")
    page.click("#compare-selected")
    expect(page).to_have_url(re.compile(r"/compare\?"))
    expect(page.locator("#compare-table tbody tr")).to_have_count(3)  # the base model and two adapters
    expect(page.locator("#side-by-side tbody tr")).to_have_count(6)
    charts = page.evaluate("() => ['compare-loss', 'compare-metrics'].map(id => !!Chart.getChart(id))")
    assert charts == [True, True]
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

    page.goto(f"/playground?ids={first}")
    question, answer = FACTS[0]
    page.fill("textarea[name=prompt]", question)
    page.fill("input[name=max_new_tokens]", "8")
    page.click("#ask")
    tuned = page.locator(f"[data-target='adapter:{first}']")
    expect(tuned.locator(".answer-state")).to_have_text("done", timeout=120_000)
    expect(page.locator("[data-target='base'] .answer-state")).to_have_text("done", timeout=60_000)
    assert answer in tuned.locator(".answer-text").inner_text().lower()
    assert errors == []
