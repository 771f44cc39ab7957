"""Sending wake-up messages to workers. The database holds the job; a message carries only its id.

The web process uses a small Celery producer configured like the worker's app (same broker, same
task name) without importing the worker package.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.config import get_settings

TRAIN_TASK = "tailor.train"
RECONCILE_TASK = "tailor.reconcile"
EVALUATE_TASK = "tailor.evaluate"
GENERATE_TASK = "tailor.generate"
EXPORT_TASK = "tailor.export_merged"
EXPORT_GGUF_TASK = "tailor.export_gguf"
INFERENCE_QUEUE = "inference"


def broker_transport_options() -> dict:
    # Shared with worker/celery_app.py: see the comments there for why these values.
    return {"visibility_timeout": 6 * 3600}


@lru_cache
def get_producer() -> Celery:
    settings = get_settings()
    producer = Celery("tailor-web", broker=settings.broker_url)
    producer.conf.broker_transport_options = broker_transport_options()
    producer.conf.broker_connection_retry_on_startup = True
    producer.conf.task_default_queue = "gpu"
    return producer


def send_train(job_id: int, queue: str) -> None:
    get_producer().send_task(TRAIN_TASK, args=[job_id], queue=queue)


def send_evaluate(adapter_id: int, queue: str = "gpu") -> None:
    get_producer().send_task(EVALUATE_TASK, args=[adapter_id], queue=queue)


def send_export(adapter_id: int) -> None:
    get_producer().send_task(EXPORT_TASK, args=[adapter_id], queue="gpu")


def send_export_gguf(adapter_id: int) -> None:
    get_producer().send_task(EXPORT_GGUF_TASK, args=[adapter_id], queue="gpu")


def send_generate(request_id: str) -> None:
    get_producer().send_task(GENERATE_TASK, args=[request_id], queue=INFERENCE_QUEUE)


def redis_url(broker_url: str | None = None) -> str:
    """The broker's Redis (or this broker URL's) as a redis-py URL (kombu's redis+socket:// becomes unix://)."""
    url = broker_url or get_settings().broker_url
    if url.startswith("redis+socket://"):
        url = "unix://" + url[len("redis+socket://") :]
    return url


def limits_storage_uri(broker_url: str | None = None, asynchronous: bool = False) -> str:
    """The same Redis as the `limits` library names it (unix:// is its redis+unix://; async+ for its
    asyncio storage): sign-in throttling, quotas and the serving limits count there."""
    url = redis_url(broker_url)
    uri = "redis+unix://" + url[len("unix://") :] if url.startswith("unix://") else url
    return "async+" + uri if asynchronous else uri


def redis_client():
    """A redis-py client on the broker's Redis."""
    import redis

    return redis.Redis.from_url(redis_url(), decode_responses=True)


def async_redis_client():
    """An asyncio redis-py client on the broker's Redis, for code that waits without a thread
    (the playground's event streams). The caller closes it (`await client.aclose()`)."""
    import redis.asyncio

    # Blocking reads (XREAD BLOCK) wait up to a few seconds; redis-py's default socket timeout is 5 s.
    return redis.asyncio.Redis.from_url(redis_url(), decode_responses=True, socket_timeout=30)
