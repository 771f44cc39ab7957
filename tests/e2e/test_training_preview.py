"""In a real browser, the training form shows three rows as the model will see them and redraws
them when the mapping changes (htmx); no worker needed."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.app.helpers import SAMPLE_CSV, bearer
from tests.conftest import TINY_MODEL_KEY


def test_the_preview_follows_the_column_choice(page, make_user, tiny_model_dir, live_server):
    _, email, password, token = make_user("e2epreview")
    with open(SAMPLE_CSV, "rb") as f:
        dataset = httpx.post(
            f"{live_server}/api/v1/datasets", headers=bearer(token), files={"file": ("northwind.csv", f, "text/csv")}, timeout=60
        ).json()
    page.goto("/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")
    page.goto(f"/datasets/{dataset['id']}")
    page.select_option("#base_model", TINY_MODEL_KEY)
    preview = page.locator("#train-preview")
    expect(preview.locator(".preview-example")).to_have_count(3)
    expect(preview.locator(".preview-example").first).to_contain_text("How do I track my order?")
    assert preview.locator("pre .tok.loss").count() > 0 and preview.locator("pre .tok.context").count() > 0
    page.select_option("#task", "classification")
    page.select_option("#class_text_column", "question")
    page.select_option("#label_column", "category")
    expect(preview.locator(".preview-example").first).to_contain_text(re.compile(r"label orders → class id \d+"))
    expect(preview.locator("pre .tok.loss")).to_have_count(0)
