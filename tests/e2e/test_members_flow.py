"""Roles in a real browser: an owner invites a colleague as viewer, the colleague accepts the link,
reads the data but cannot start a job, and the owner finds all of it in the audit log."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.app.helpers import SAMPLE_CSV, bearer

PASSWORD = "a long viewer password"


def _sign_in(page, email: str, password: str) -> None:
    page.goto("/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")


def test_owner_invites_a_viewer_who_reads_but_cannot_train(browser, live_server, make_user):
    owner = make_user("e2e-owner")
    uploaded = httpx.post(
        f"{live_server}/api/v1/datasets",
        headers=bearer(owner.token),
        files={"file": ("northwind.csv", SAMPLE_CSV.read_bytes(), "text/csv")},
        timeout=60,
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset_id = uploaded.json()["id"]
    colleague = f"viewer-{owner.id}@example.com"

    owner_context = browser.new_context(base_url=live_server)
    page = owner_context.new_page()
    _sign_in(page, owner.email, owner.password)
    page.click("text=Members")
    expect(page.locator("h1")).to_have_text("Members")
    page.fill("#invite-form input[name=email]", colleague)
    page.select_option("#invite-form select[name=role]", "viewer")
    page.click("#invite-form button[type=submit]")
    expect(page.locator("#new-invite")).to_contain_text(colleague)
    link = page.locator("#invite-link").input_value()
    assert "/invite/inv_" in link

    colleague_context = browser.new_context(base_url=live_server)
    other = colleague_context.new_page()
    other.goto(link)
    expect(other.locator("body")).to_contain_text("invited as viewer")
    other.fill("input[name=password]", PASSWORD)
    other.fill("input[name=password_again]", PASSWORD)
    other.click("button[type=submit]")
    expect(other.locator("[role=status]")).to_contain_text("Your account is ready")
    other.fill("input[name=password]", PASSWORD)
    other.click("button[type=submit]")
    expect(other.locator("h1")).to_have_text("Dashboard")
    # Reading works; training is not offered, and asking anyway is refused.
    other.goto(f"/datasets/{dataset_id}")
    expect(other.locator("#row-count")).to_have_text("220")
    expect(other.locator("#train-readonly")).to_contain_text("Your role in this workspace is viewer")
    expect(other.locator("#start-training")).to_have_count(0)
    refused = other.evaluate(
        """async (datasetId) => {
            const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];
            const r = await fetch('/api/v1/jobs', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
                body: JSON.stringify({dataset_id: datasetId, column_mapping: {prompt: 'question', response: 'answer'},
                                      base_model: 'tiny-llama', technique: 'lora'})});
            return [r.status, (await r.json()).detail];
        }""",
        dataset_id,
    )
    assert refused[0] == 403 and "your role in this workspace is viewer" in refused[1]
    other.goto("/settings/audit")
    expect(other.locator("h1")).to_have_text("Not allowed")

    # The owner sees the invite, the colleague joining and signing in.
    page.goto("/settings/audit")
    table = page.locator("#audit-table")
    expect(table.locator("tr[data-action=member_invited]")).to_contain_text(colleague)
    expect(table.locator("tr[data-action=invite_accepted]")).to_contain_text(colleague)
    expect(table.locator("tr[data-action=sign_in]").first).to_contain_text(colleague)
    page.select_option("#audit-filter select[name=action]", "member_invited")
    page.click("#audit-filter button[type=submit]")
    expect(page).to_have_url(re.compile(r"action=member_invited"))
    expect(table.locator("tbody tr")).to_have_count(1)
    owner_context.close()
    colleague_context.close()
