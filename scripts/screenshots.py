"""Capture the README's screenshots from a running Tailor (after `tailor up` and one finished job).

Usage: .venv/bin/python scripts/screenshots.py http://127.0.0.1:8000 EMAIL PASSWORD
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update"]


def main(base: str, email: str, password: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 900})
        page.goto("/login")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        page.screenshot(path=OUT / "dashboard.png")
        page.locator('.list a[href^="/datasets/"]').first.click()
        page.wait_for_url("**/datasets/*")
        page.screenshot(path=OUT / "dataset.png", full_page=True)
        page.goto("/")
        page.locator("#jobs-table a").first.click()
        page.wait_for_timeout(1000)
        page.screenshot(path=OUT / "job.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
