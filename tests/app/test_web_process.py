"""The web process stays light: importing it never pulls in the ML stack."""

import subprocess
import sys


def test_importing_app_main_does_not_import_torch():
    code = (
        "import sys, app.main\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the web process imported {out.stdout.strip()}"


def test_health_needs_no_sign_in(client):
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}
