"""`tailor engine`: load the base model, then serve until SIGTERM."""

from __future__ import annotations

import logging

from app.config import get_settings
from worker.serving.engine import Engine, EngineConfig, default_engine_name

log = logging.getLogger("tailor.engine")


def load_engine(base_model: str, name: str | None = None, client=None) -> Engine:
    """Load the catalogue's base model (safetensors, no remote code) and build its engine."""
    from app.base_models import get_base_model
    from app.queue import redis_client
    from worker.training.loading import load_base_model, pick_device, training_dtype

    settings = get_settings()
    entry = get_base_model(settings, base_model)
    if entry is None or not entry.available or entry.source != "folder":
        raise SystemExit(f"The base model {base_model!r} is not installed in {settings.models_dir} (try `tailor provision-demo`).")
    device = pick_device()
    model, tokenizer = load_base_model(entry.location, device, dtype=training_dtype("auto", device))
    config = EngineConfig(
        base_model=base_model,
        name=name or default_engine_name(base_model),
        max_batch=settings.serve_max_batch,
        max_adapters=settings.serve_max_adapters,
        adapter_memory_bytes=settings.serve_adapter_memory_mb * 1024 * 1024,
        stop_grace_seconds=settings.serve_stop_grace_seconds,
    )

    def load_base():
        return load_base_model(entry.location, device, dtype=training_dtype("auto", device))[0].eval()

    return Engine(config, model, tokenizer, client or redis_client(), load_base=load_base)


def serve(base_model: str, name: str | None = None) -> int:
    from app.logs import configure_logging

    configure_logging("INFO", get_settings().log_format)
    engine = load_engine(base_model, name)
    engine.install_signal_handlers()
    engine.run()
    return 0
