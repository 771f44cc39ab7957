"""The web ↔ engine contract survives its trip through JSON and Redis stream fields."""

from app.services.serving_protocol import AdapterRef, ServeEvent, ServeRequest


def test_request_round_trips_through_json():
    request = ServeRequest(
        id="abc",
        base_model="smollm2-135m-instruct",
        adapter=AdapterRef(id=3, storage_key="adapters/3", version="v1"),
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=7,
        temperature=0.0,
        stop=["\n"],
        seed=4,
    )
    assert ServeRequest.from_json(request.to_json()) == request
    base_only = ServeRequest(id="x", base_model="b", adapter=None, prompt="Once")
    assert ServeRequest.from_json(base_only.to_json()) == base_only


def test_event_round_trips_through_stream_fields_as_redis_returns_them():
    event = ServeEvent(type="error", status=400, code="context_length_exceeded", message="Too long.")
    fields = {k.encode(): v.encode() for k, v in event.to_fields().items()}
    assert ServeEvent.from_fields(fields) == event
    done = ServeEvent(type="done", prompt_tokens=5, completion_tokens=9, finish_reason="length")
    assert ServeEvent.from_fields(done.to_fields()) == done
    assert "text" not in done.to_fields()
