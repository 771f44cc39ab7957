"""The hardening as a browser and an attacker meet it, against the real server (uvicorn): the main
pages run under the strict Content-Security-Policy without a single violation, and a 150 MB body
without credentials is refused with 413 without the server reading it."""

from __future__ import annotations

import re
import socket
import time
from datetime import timedelta

import psutil
from playwright.sync_api import expect

from tests.app.helpers import SAMPLE_CSV, bearer
from tests.conftest import TINY_MODEL_KEY

COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sourceFile || "") + ":" + e.lineNumber);
});
"""


def _job_with_a_loss_curve(dataset_id: int) -> tuple[int, int]:
    """A finished job with a loss curve and its adapter (rows only: the pages need no files)."""
    from app.db import session_scope
    from app.models import Adapter, Dataset, Job, MetricPoint, utcnow

    with session_scope() as db:
        dataset = db.get(Dataset, dataset_id)
        job = Job(
            workspace_id=dataset.workspace_id,
            dataset_id=dataset.id,
            name="CSP check",
            task="instruction",
            column_mapping={"prompt": "question", "response": "answer"},
            base_model=TINY_MODEL_KEY,
            technique="lora",
            params={},
            status="succeeded",
            finished_at=utcnow(),
        )
        db.add(job)
        db.flush()
        for step in range(1, 6):
            db.add(MetricPoint(job_id=job.id, step=step, epoch=step / 5, loss=2.0 / step, created_at=utcnow() + timedelta(seconds=step)))
        adapter = Adapter(
            workspace_id=dataset.workspace_id,
            job_id=job.id,
            name="CSP adapter",
            technique="lora",
            base_model=TINY_MODEL_KEY,
            storage_key=f"adapters/csp-{job.id}",
            metrics={"validation_loss": 0.5},
        )
        db.add(adapter)
        db.flush()
        return job.id, adapter.id


def test_the_main_pages_run_without_a_csp_violation(page, make_user, tiny_model_dir, live_server):
    import httpx

    user = make_user("csp")
    dataset_id = httpx.post(
        f"{live_server}/api/v1/datasets", headers=bearer(user.token), files={"file": ("northwind.csv", SAMPLE_CSV.read_bytes(), "text/csv")}
    ).json()["id"]
    job_id, adapter_id = _job_with_a_loss_curve(dataset_id)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.add_init_script(COLLECT_VIOLATIONS)

    page.goto("/login")
    assert "default-src 'self'" in page.request.get(f"{live_server}/login").headers["content-security-policy"]
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", user.password)
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")

    visited = {}
    pages = ("/", "/datasets/new", f"/datasets/{dataset_id}", f"/jobs/{job_id}", "/adapters", f"/compare?ids={adapter_id}")
    for path in (*pages, "/playground", "/workers", "/account", "/settings/members", "/settings/audit", "/settings/tokens"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        visited[path] = page.evaluate("window.__cspViolations")
        if path == f"/datasets/{dataset_id}":
            # An htmx partial with bars sized from data-height by static/app.js.
            page.select_option("#token-form select[name=base_model]", TINY_MODEL_KEY)
            page.click("#token-form button[type=submit]")
            bar = page.locator("#token-lengths .histogram .bar span").first
            expect(bar).to_be_attached()
            assert page.evaluate("document.querySelector('#token-lengths .histogram .bar span').style.height").endswith("%")
            # The delete form asks first (data-confirm, no onsubmit attribute); dismissing keeps the dataset.
            page.once("dialog", lambda dialog: dialog.dismiss())
            page.click("text=Delete dataset")
            expect(page).to_have_url(re.compile(rf"/datasets/{dataset_id}$"))
            visited[path + " (htmx)"] = page.evaluate("window.__cspViolations")
        if path == "/adapters":
            # The status select submits its form when changed (data-submit-on-change, no onchange attribute).
            with page.expect_navigation():  # the form is submitted; the page that comes back shows the stored value
                page.select_option("tr:has-text('CSP adapter') select[name=status]", "approved")
            expect(page.locator("tr:has-text('CSP adapter') select[name=status]")).to_have_value("approved")
            visited[path + " (status)"] = page.evaluate("window.__cspViolations")
        if path == f"/jobs/{job_id}":
            expect(page.locator("canvas#loss-chart")).to_be_visible()
            assert page.evaluate("Chart.getChart(document.getElementById('loss-chart')) !== undefined")
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Tailor")
    expect(page.locator(".opblock").first).to_be_visible()
    visited["/docs"] = page.evaluate("window.__cspViolations")

    assert {path: found for path, found in visited.items() if found} == {}
    assert [line for line in console if "Content Security Policy" in line or "Refused to" in line] == []


def _server_process(live_server: str) -> psutil.Process:
    port = live_server.rsplit(":", 1)[1]
    for child in psutil.Process().children(recursive=True):
        cmdline = child.cmdline()
        if "serve" in cmdline and port in cmdline:
            return child
    raise AssertionError("the live server's process was not found")


def _send_until_answered(live_server: str, head: bytes, chunk: bytes, total: int) -> tuple[bytes, int]:
    """Send the head, then body chunks until the server answers (or the total is sent); returns the
    answer's first bytes and how many body bytes went out."""
    host, port = live_server.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head)
        conn.setblocking(False)
        answer = b""
        while sent < total:
            try:
                answer = conn.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                sent += conn.send(chunk)
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        conn.setblocking(True)
        conn.settimeout(10)
        while b"\r\n\r\n" not in answer:
            more = conn.recv(65536)
            if not more:
                break
            answer += more
    return answer, sent


def test_a_150_mb_body_without_credentials_is_refused_unread(live_server):
    total = 150 * 10**6
    server = _server_process(live_server)
    rss_before = server.memory_info().rss

    declared = f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n".encode()
    answer, sent = _send_until_answered(live_server, declared, b"[" * 65536, total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than the limit" in answer or b"content-length" in answer.lower()
    assert sent < 20 * 10**6, f"{sent} bytes went out before the answer"

    # Chunked: no length announced; the server stops reading at the limit.
    chunked = b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"[" * 65536
    answer, sent = _send_until_answered(live_server, chunked, b"%x\r\n" % len(piece) + piece + b"\r\n", total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 20 * 10**6, f"{sent} bytes went out before the answer"

    assert server.memory_info().rss - rss_before < 50 * 2**20
