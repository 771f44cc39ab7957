"""The process settings of a worker or serving engine, applied before torch loads: OpenMP's waiting
policy and the memory allocator.

OpenMP threads that wait at a barrier sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE). On a CPU
shared with other work (other workers, the serving engine, anything else) spinning threads steal the
cores the others need: measured on a loaded 2-core machine (bench/first_job.py, README), training
steps ran 3.4x and greedy decoding 9x faster with passive waiting; alone it costs ~28% (README).
An explicit OMP_WAIT_POLICY wins.

jemalloc instead of glibc's malloc, where the machine has it (Debian/Ubuntu: libjemalloc2; the
Docker image installs it): glibc keeps freed activations of a CPU training step in the process,
jemalloc returns them, so the demo LoRA job (batch 8, max_length 512) peaks at 1.49 GB instead of
1.65-1.93 GB at the same speed (bench/train_throughput.py, README). A library is preloaded only by
starting the process again with LD_PRELOAD, so `tailor worker` and `tailor engine` re-execute
themselves once (TAILOR_WORKER_ALLOCATOR=system keeps glibc's).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

WORKER_OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
JEMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)
ALLOCATORS = ("auto", "jemalloc", "system")


def set_worker_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """The worker's OpenMP settings (WORKER_OMP_ENV), unless the environment names its own."""
    for key, value in WORKER_OMP_ENV.items():
        environ.setdefault(key, value)


def find_jemalloc(exists: Callable[[str], bool] = os.path.exists) -> str | None:
    """The path of jemalloc's shared library on this machine, None without one."""
    found = next((path for path in JEMALLOC_CANDIDATES if exists(path)), None)
    if found is None:
        name = ctypes.util.find_library("jemalloc")  # e.g. "libjemalloc.so.2", resolvable by the loader
        found = name or None
    return found


def allocator_preload(choice: str, environ: Mapping[str, str], library: str | None) -> str | None:
    """The LD_PRELOAD value to start this process again with, or None to go on as it is: already
    preloaded, the system allocator chosen, or no jemalloc here. `jemalloc` without the library is
    an error the operator must see."""
    if choice not in ALLOCATORS:
        raise SystemExit(f"TAILOR_WORKER_ALLOCATOR must be one of {', '.join(ALLOCATORS)}, not {choice!r}.")
    if choice == "system":
        return None
    if library is None:
        if choice == "jemalloc":
            raise SystemExit(
                "TAILOR_WORKER_ALLOCATOR=jemalloc, but no libjemalloc.so.2 was found (Debian/Ubuntu: apt install libjemalloc2)."
            )
        return None
    current = environ.get("LD_PRELOAD", "")
    if "jemalloc" in current:
        return None
    return f"{library} {current}".strip()


def use_worker_allocator(choice: str, argv: list[str]) -> None:
    """Start this `tailor` command (`argv`: its arguments) again with jemalloc preloaded when
    `allocator_preload` says so (os.execv: same process id); else say on stderr which allocator it runs on."""
    preload = allocator_preload(choice, os.environ, find_jemalloc())
    if preload is None:
        print(f"memory allocator: {preloaded_allocator()} (TAILOR_WORKER_ALLOCATOR={choice})", file=sys.stderr, flush=True)
        return
    os.environ["LD_PRELOAD"] = preload
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "app.cli", *argv])


def preloaded_allocator(maps: Path = Path("/proc/self/maps")) -> str:
    """ "jemalloc" when this process has it mapped, else "system" (what the worker reports)."""
    try:
        return "jemalloc" if "libjemalloc" in maps.read_text() else "system"
    except OSError:
        return "system"
