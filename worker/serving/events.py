"""Answers to Redis: events appended to each request's stream, in one round trip per decode step."""

from __future__ import annotations

from app.services.serving_protocol import EVENTS_TTL_SECONDS, ServeEvent, events_key


class EventSink:
    """Collects events during a step and writes them (and the streams' expiry) in one pipeline."""

    def __init__(self, client):
        self.client = client
        self.pending: list[tuple[str, ServeEvent]] = []

    def add(self, request_id: str, event: ServeEvent) -> None:
        self.pending.append((request_id, event))

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        pipe = self.client.pipeline(transaction=False)
        for request_id, event in pending:
            pipe.xadd(events_key(request_id), event.to_fields())
        for request_id in {request_id for request_id, _ in pending}:
            pipe.expire(events_key(request_id), EVENTS_TTL_SECONDS)
        pipe.execute()

    def send(self, request_id: str, event: ServeEvent) -> None:
        self.add(request_id, event)
        self.flush()
