"""Small helpers shared by the web tests."""

from __future__ import annotations

from pathlib import Path

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "data" / "samples" / "northwind_support.csv"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(client, token: str, content: bytes, filename: str = "data.csv"):
    return client.post("/api/v1/datasets", headers=bearer(token), files={"file": (filename, content, "text/csv")})
