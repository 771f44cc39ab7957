"""Serving's pure parts: an adapter's model name (slug) and the copy-paste snippets that call it,
shared by the adapter page's Use it panel and the model card in the zip."""

from __future__ import annotations

import json
import re

SCOPES = ("serve", "manage")  # serve: the /v1 endpoint; manage: the /api/v1 management API


def adapter_slug(name: str, number: int) -> str:
    """A readable, stable model name, e.g. 'northwind-support-lora-3' for 'northwind_support · LoRA'
    of job 3: lower-case words joined by hyphens, then the number that keeps it unique."""
    words = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")[:80].rstrip("-")
    return f"{words or 'adapter'}-{number}"


def usage_snippets(base_url: str, model: str, *, token_hint: str = "YOUR_TAILOR_TOKEN") -> dict[str, str]:
    """curl, the official openai Python client, and the settings any OpenAI-compatible client needs."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Where is my order?"}], "max_tokens": 128})
    curl = (
        f"curl {base_url}/chat/completions \\\n"
        f'  -H "Authorization: Bearer $TAILOR_TOKEN" \\\n'
        f'  -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'"
    )
    python = (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}", api_key="{token_hint}")\n'
        "answer = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Where is my order?"}],\n'
        "    max_tokens=128,\n"
        ")\n"
        "print(answer.choices[0].message.content)"
    )
    other = f"base_url = {base_url}\napi_key  = {token_hint}   # a token with the 'serve' scope\nmodel    = {model}"
    return {"curl": curl, "python": python, "any": other}
