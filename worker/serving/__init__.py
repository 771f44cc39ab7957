"""The serving engine (`tailor engine`): one long-running process per base model that answers the
/v1 routes' requests from Redis (app/services/serving_protocol.py) by continuous batching, with
requests for different LoRA adapters and the base model decoded together in one forward pass.

Modules: engine (the loop: intake, admission, decode steps, heartbeat, shutdown), batch (the
running batch and its KV cache), adapters (the adapter LRU and its background loader), prompts
(a request into token ids, or a 4xx), text (incremental detokenization and stop strings),
sampling (greedy / temperature / top-p with a generator per request), events (answers to Redis),
solo (adapters PEFT cannot mix in one batch, decoded one request at a time)."""
