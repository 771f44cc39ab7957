"""Serving throughput: the engine's continuous batching with mixed adapters against two baselines.

8 random LoRA adapters (r=8) on the demo model; 32 concurrent streaming clients, each request pinned
to a random adapter, 64 new tokens each (end of sequence ignored, so every request generates the
same number of tokens). Measured in one run, all through the same prompts:

- engine:     the serving engine (`worker.serving`, in a thread of this process) answering over the
              Redis protocol, clients reading their event streams (what `/v1` does);
- sequential: the same requests one at a time with an adapter swap between them, what the
              playground does (`set_adapter` + `generate`, one model copy) - baseline (a);
- base:       the base model alone through the same engine, all rows `__base__`, no adapter
              loaded (the ceiling) - baseline (b).

Reported: aggregate generated tokens/s, p50/p95 time to first token and p95 inter-token latency
(from the moment all requests are sent), and the ratios engine/sequential (goal >= 4x) and
engine/base (goal >= 0.7).

    python bench/serve_throughput.py                       # DATA_DIR/models/smollm2-135m-instruct
    python bench/serve_throughput.py --clients 16 --tokens 32 --model path/to/model

Needs a Redis (TAILOR_REDIS_URL, default redis://127.0.0.1:6379/14). The adapters are written into
a temporary data directory.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Where is my parcel? I ordered a blue jacket last week.",
    "Can I return a shirt that I already wore once?",
    "How long does shipping to Norway take?",
    "My invoice shows the wrong address, what should I do?",
    "Do you repair the sleeves of a wool coat?",
    "What sizes does the linen dress come in?",
    "I was charged twice for one order.",
    "Is there a discount code for students?",
]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def make_adapters(model_dir: Path, count: int, rank: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from app.services.artifacts import get_artifact_store
    from app.services.serving_protocol import AdapterRef

    refs = []
    for i in range(count):
        torch.manual_seed(100 + i)
        base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        key = f"bench/adapter-{i}"
        model.save_pretrained(str(get_artifact_store().path(key)), safe_serialization=True)
        refs.append(AdapterRef(id=i + 1, storage_key=key, version="bench"))
    return refs


def summary(name: str, started: float, ended: float, tokens: int, ttft: list[float], gaps: list[float]) -> dict:
    wall = ended - started
    return {
        "name": name,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50": percentile(ttft, 0.5),
        "ttft_p95": percentile(ttft, 0.95),
        "itl_p95": percentile(gaps, 0.95),
    }


def run_engine_clients(client, base_model: str, plan, tokens: int) -> dict:
    """All clients push at once and read their streams until done."""
    from app.services.serving_protocol import ServeEvent, ServeRequest, events_key, queue_key

    ttft: list[float] = []
    gaps: list[float] = []
    counts: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(plan) + 1)

    def one(adapter, prompt) -> None:
        rid = uuid.uuid4().hex
        request = ServeRequest(
            id=rid,
            base_model=base_model,
            adapter=adapter,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=tokens,
            temperature=0.0,
        )
        barrier.wait()
        sent = time.monotonic()
        client.rpush(queue_key(base_model), request.to_json())
        last_id, first, previous, mine = "0-0", None, None, []
        give_up = sent + 300
        while True:
            reply = client.xread({events_key(rid): last_id}, block=2_000)  # under redis-py's 5 s socket timeout
            if not reply:
                if time.monotonic() > give_up:
                    raise RuntimeError("no answer within 300 s")
                continue
            for entry_id, fields in reply[0][1]:
                last_id = entry_id
                event = ServeEvent.from_fields(fields)
                now = time.monotonic()
                if event.type == "token":
                    if first is None:
                        first = now - sent
                    elif previous is not None:
                        mine.append(now - previous)
                    previous = now
                elif event.type == "error":
                    raise RuntimeError(event.message)
                elif event.type == "done":
                    with lock:
                        ttft.append(first if first is not None else now - sent)
                        gaps.extend(mine)
                        counts.append(event.completion_tokens)
                    return

    threads = [threading.Thread(target=one, args=item) for item in plan]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    return summary("", started, time.monotonic(), sum(counts), ttft, gaps)


class TokenTimer:
    """A generate() streamer that notes when each new token arrives (the first put is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.append(time.monotonic())

    def end(self) -> None:
        pass


def run_sequential(model_dir: Path, refs, plan, tokens: int) -> dict:
    """The playground's way: one model copy, set_adapter + generate, one request after another."""
    import torch
    from peft import PeftModel

    from app.services.artifacts import get_artifact_store
    from worker.training.data import render_prompt
    from worker.training.loading import load_base_model

    base, tokenizer = load_base_model(model_dir, dtype=torch.float32)
    model = None
    for ref in refs:
        folder = str(get_artifact_store().path(ref.storage_key))
        if model is None:
            model = PeftModel.from_pretrained(base, folder, adapter_name=f"a{ref.id}")
        else:
            model.load_adapter(folder, adapter_name=f"a{ref.id}")
    model.eval()
    ttft: list[float] = []
    gaps: list[float] = []
    total = 0
    started = time.monotonic()
    for adapter, prompt in plan:
        model.set_adapter(f"a{adapter.id}")
        inputs = tokenizer(render_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)
        timer = TokenTimer()
        with torch.inference_mode():
            model.generate(
                **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=timer, pad_token_id=tokenizer.pad_token_id
            )
        ttft.append(timer.times[0] - started)  # queued since the start, like the concurrent clients
        gaps.extend(b - a for a, b in zip(timer.times, timer.times[1:]))
        total += len(timer.times)
    return summary("sequential", started, time.monotonic(), total, ttft, gaps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: DATA_DIR/models/smollm2-135m-instruct)")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 on a busy shared CPU)")
    args = parser.parse_args()

    model_dir = args.model or Path(os.environ.get("TAILOR_DATA_DIR", ROOT / "var")) / "models" / "smollm2-135m-instruct"
    if not (model_dir / "config.json").is_file():
        print(f"No model in {model_dir}: run `tailor provision-demo` or pass --model.", file=sys.stderr)
        return 2
    data_dir = Path(tempfile.mkdtemp(prefix="tailor-serve-bench-"))
    os.environ["TAILOR_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("TAILOR_REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ["TAILOR_SERVE_MAX_BATCH"] = str(args.clients)

    import torch

    from app.logs import configure_logging
    from app.queue import redis_client
    from worker.serving.engine import Engine, EngineConfig
    from worker.training.loading import load_base_model

    configure_logging("WARNING")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"model {model_dir.name}, {args.adapters} adapters (LoRA r={args.rank}), {args.clients} clients, "
        f"{args.tokens} tokens each, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    refs = make_adapters(model_dir, args.adapters, args.rank)
    rng = random.Random(0)
    plan = [(rng.choice(refs), PROMPTS[i % len(PROMPTS)]) for i in range(args.clients)]
    client = redis_client()
    results = []

    for name, with_adapters in (("engine", True), ("base", False)):
        model, tokenizer = load_base_model(model_dir, dtype=torch.float32)
        config = EngineConfig(
            base_model=f"bench-{uuid.uuid4().hex[:6]}", name="bench-engine", max_batch=args.clients, max_adapters=args.adapters
        )
        engine = Engine(config, model, tokenizer, client)
        engine.eos_ids = set()  # every request generates exactly --tokens tokens, as in the baseline
        runner = threading.Thread(target=engine.run, daemon=True)
        runner.start()
        if with_adapters:  # warm the adapters into the LRU first: this measures serving, not first loads
            run_engine_clients(client, config.base_model, [(ref, "hi") for ref in refs], 2)
        else:
            run_engine_clients(client, config.base_model, [(None, "hi")], 2)
        result = run_engine_clients(client, config.base_model, [(a if with_adapters else None, p) for a, p in plan], args.tokens)
        result["name"] = name
        results.append(result)
        engine.request_stop()
        engine.stop_deadline = 0.0
        runner.join(timeout=60)
        print(_line(result), flush=True)

    if not args.skip_sequential:
        result = run_sequential(model_dir, refs, plan, args.tokens)
        results.append(result)
        print(_line(result), flush=True)

    by_name = {r["name"]: r for r in results}
    engine_rate = by_name["engine"]["tokens_per_s"]
    if "sequential" in by_name:
        print(f"engine / sequential (a): {engine_rate / by_name['sequential']['tokens_per_s']:.2f}x   (goal >= 4x)")
    print(f"engine / base (b):       {engine_rate / by_name['base']['tokens_per_s']:.2f}    (goal >= 0.70)")
    return 0


def _line(r: dict) -> str:
    return (
        f"{r['name']:<11} {r['tokens']:>6} tokens in {r['wall_s']:7.2f} s = {r['tokens_per_s']:8.1f} tokens/s | "
        f"TTFT p50 {r['ttft_p50'] * 1000:7.0f} ms p95 {r['ttft_p95'] * 1000:7.0f} ms | ITL p95 {r['itl_p95'] * 1000:6.0f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
