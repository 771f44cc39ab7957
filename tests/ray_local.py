"""A Ray cluster of two nodes on this machine for tests (`ray start --head` + `ray start --address`),
one CPU each, in a temporary folder on a free port; stopped by killing exactly its processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(entry)] = (int(stat.rsplit(") ", 1)[1].split()[1]), cmdline)
    return table


def cluster_pids(marker: str) -> list[int]:
    """Processes whose command line names `marker` (the cluster's temp folder), and their descendants."""
    table = _processes()
    found = {pid for pid, (_, cmd) in table.items() if marker in cmd and pid != os.getpid()}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        grew = bool(children)
        found |= children
    return sorted(found)


def stop_cluster(marker: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in cluster_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


@contextmanager
def two_node_cluster(cpus_per_node: int = 1):
    """Yields (address, temp folder) of a running two-node cluster; stops it afterwards."""
    temp = tempfile.mkdtemp(prefix="tray-", dir="/tmp")  # short: Ray's unix sockets live under it
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    common = [f"--num-cpus={cpus_per_node}", "--num-gpus=0", "--disable-usage-stats"]
    try:
        subprocess.run(
            ["nice", "-n", "10", str(RAY), "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false", *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
        )
        subprocess.run(
            ["nice", "-n", "10", str(RAY), "start", f"--address=127.0.0.1:{port}", *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
        )
        yield f"127.0.0.1:{port}", temp
    finally:
        stop_cluster(temp)
