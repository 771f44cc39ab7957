"""Training throughput: Tailor's engine against TRL's SFTTrainer and the plain script peers use.

The main baseline is TRL's `SFTTrainer` with its defaults for prompt-completion data (padding to
the longest row of each batch, loss on the completion only: the trainer LLaMA-Factory, axolotl
and unsloth build on). The second is what most fine-tuning tutorials do: transformers `Trainer`
+ PEFT, every example padded to `max_length`. Tailor's engine batches examples of similar length (padding only to the
longest in each batch) and runs its own loop. Both train the same technique on the same
tokenized rows (loss on the answer tokens only), with the same batch size, learning rate, seed
and number of optimizer steps; the held-out loss of both is measured by the same function.

Reported per technique and system: real tokens/s (padding not counted), peak memory (each run in
its own process: peak resident set on a CPU, peak allocated on CUDA) and the final validation
loss; then the engine/baseline ratios measured in this same run.

    python bench/train_throughput.py                      # SmolLM2-135M, LoRA, QLoRA-4bit, IA3, prompt tuning
    python bench/train_throughput.py --steps 6 --techniques lora
    python bench/train_throughput.py --model path/to/model --data my.csv --prompt-column q --response-column a

The model folder defaults to DATA_DIR/models/smollm2-135m-instruct (or /tmp/demo2/...); make one
with `python -m worker.training.loading <gguf> <out>`. Runs on CUDA when available.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.preference_throughput import from_train_throughput  # noqa: E402 - after the path

DEFAULT_DATA = ROOT / "data" / "samples" / "northwind_support.csv"
MODEL_CANDIDATES = [
    Path(os.environ.get("TAILOR_DATA_DIR", ROOT / "var")) / "models" / "smollm2-135m-instruct",
    Path("/tmp/demo2/models/smollm2-135m-instruct"),
]
# Technique -> (engine key, parameters). Learning rates are each technique's catalogue default.
TECHNIQUES = {
    "lora": ("lora", {}),
    "qlora-4bit": ("qlora", {"bits": "4"}),
    "ia3": ("ia3", {}),
    "prompt_tuning": ("prompt_tuning", {"init": "random"}),
}


def load_rows(path: Path, prompt_column: str, response_column: str) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return [
            (r[prompt_column].strip(), r[response_column].strip())
            for r in csv.DictReader(f)
            if r.get(prompt_column, "").strip() and r.get(response_column, "").strip()
        ]


def split(rows, seed: int = 0, validation: int = 24):
    import random

    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    return shuffled[validation:], shuffled[:validation]


def _peak_memory(device) -> int:
    import resource

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _params(technique: str, args) -> tuple[str, dict]:
    from app.domain.techniques import CATALOGUE, validate_params

    key, extra = TECHNIQUES[technique]
    params = validate_params(
        CATALOGUE[key],
        {
            **extra,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "max_steps": args.steps,
            "epochs": 50,
            "warmup_ratio": 0.1,
            "checkpoint_minutes": 0,
            "gradient_checkpointing": "off",
        },
    )
    return key, params


def run_engine(technique: str, args) -> dict:
    """Tailor's own loop: length-grouped batches, real tokens counted."""
    import tempfile

    from worker.training.loop import run_training
    from worker.training.spec import TrainingSpec

    class Quiet:
        def on_progress(self, progress):
            pass

        def should_stop(self):
            return False

    key, params = _params(technique, args)
    train_rows, validation_rows = split(load_rows(Path(args.data), args.prompt_column, args.response_column))
    with tempfile.TemporaryDirectory() as out:
        spec = TrainingSpec(
            base_model_dir=str(args.model),
            technique=key,
            params=params,
            train_rows=train_rows,
            validation_rows=validation_rows,
            output_dir=str(Path(out) / "adapter"),
            seed=args.seed,
        )
        run = run_training(spec, Quiet())
    result = run.result
    from worker.training.loading import pick_device

    seconds = result.train_seconds - result.eval_seconds  # the baseline's time has no evaluation in it either
    return {
        "real_tokens": result.tokens_seen,
        "seconds": seconds,
        "tokens_per_second": result.tokens_seen / seconds,
        "validation_loss": result.validation_loss,
        "peak_memory_bytes": _peak_memory(pick_device()),
        "steps": result.steps,
    }


def run_baseline(technique: str, args) -> dict:
    """What peers do: transformers Trainer + PEFT, every example padded to max_length."""
    import torch
    from transformers import Trainer, TrainingArguments

    from worker.training.data import IGNORE_INDEX, pad_token_id, tokenize_rows
    from worker.training.held_out import evaluate_loss
    from worker.training.loading import load_base_model, pick_device, use_exact_cpu_4bit_kernel
    from worker.training.peft_factory import BuildContext, build_peft_model, quantization_bits
    from worker.training.schedule import seed_everything

    key, params = _params(technique, args)
    device = pick_device()
    seed_everything(args.seed)
    train_rows, validation_rows = split(load_rows(Path(args.data), args.prompt_column, args.response_column))
    model, tokenizer = load_base_model(args.model, device, quantization_bits=quantization_bits(key, params))
    train = tokenize_rows(tokenizer, train_rows, args.max_length).examples
    validation = tokenize_rows(tokenizer, validation_rows, args.max_length).examples
    pad = pad_token_id(tokenizer)
    seed_everything(args.seed)
    model = build_peft_model(model, key, params, BuildContext(total_steps=args.steps, tokenizer_dir=str(args.model)))
    if quantization_bits(key, params) and device.type == "cpu":
        use_exact_cpu_4bit_kernel(model)

    real_tokens = {"n": 0}

    def pad_to_max(features):
        n = args.max_length
        batch = {
            "input_ids": torch.tensor([f.input_ids + [pad] * (n - len(f)) for f in features]),
            "attention_mask": torch.tensor([[1] * len(f) + [0] * (n - len(f)) for f in features]),
            "labels": torch.tensor([f.labels + [IGNORE_INDEX] * (n - len(f)) for f in features]),
        }
        real_tokens["n"] += int(batch["attention_mask"].sum())
        return batch

    import tempfile

    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
            learning_rate=float(params["learning_rate"]),
            warmup_steps=max(1, round(0.1 * args.steps)),
            lr_scheduler_type="linear",
            weight_decay=0.0,
            max_grad_norm=1.0,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            seed=args.seed,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
            use_cpu=device.type == "cpu",
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=pad_to_max)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    validation_loss = evaluate_loss(model, validation, args.batch_size, pad, device)
    return {
        "real_tokens": real_tokens["n"],
        "seconds": seconds,
        "tokens_per_second": real_tokens["n"] / seconds,
        "validation_loss": validation_loss,
        "peak_memory_bytes": _peak_memory(device),
        "steps": args.steps,
    }


def run_sft(technique: str, args) -> dict:
    """The main baseline: TRL's SFTTrainer, its defaults for prompt-completion data (conversational
    rows through the model's chat template, each batch padded to its longest row, loss on the
    completion only), the same PEFT shape, batch, learning rate, schedule and steps. Precision and
    gradient checkpointing are set as in the engine's run (TRL would default to bf16 and
    checkpointing on), so the two differ in their data path and loop, not in their arithmetic."""
    from datasets import Dataset

    from worker.training.data import tokenize_rows
    from worker.training.gpu_check_baselines import sft_train
    from worker.training.held_out import evaluate_loss
    from worker.training.loading import load_base_model, pick_device
    from worker.training.peft_factory import BuildContext, builder_for, quantization_bits
    from worker.training.schedule import seed_everything

    key, params = _params(technique, args)
    device = pick_device()
    seed_everything(args.seed)
    train_rows, validation_rows = split(load_rows(Path(args.data), args.prompt_column, args.response_column))
    model, tokenizer = load_base_model(args.model, device, quantization_bits=quantization_bits(key, params))
    validation = tokenize_rows(tokenizer, validation_rows, args.max_length).examples
    data = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]} for q, a in train_rows]
    )
    peft_config = builder_for(key).configure(params, model, BuildContext(total_steps=args.steps, tokenizer_dir=str(args.model)))
    seed_everything(args.seed)
    trainer, real_tokens, seconds = sft_train(
        model, tokenizer, data, peft_config, steps=args.steps, batch_size=args.batch_size,
        learning_rate=float(params["learning_rate"]), max_length=args.max_length, device=device, seed=args.seed,
    )  # fmt: skip
    validation_loss = evaluate_loss(trainer.model, validation, args.batch_size, pad_token_id(tokenizer), device)
    return {
        "real_tokens": real_tokens,
        "seconds": seconds,
        "tokens_per_second": real_tokens / seconds,
        "validation_loss": validation_loss,
        "peak_memory_bytes": _peak_memory(device),
        "steps": args.steps,
    }


def pad_token_id(tokenizer) -> int:
    from worker.training.data import pad_token_id as pad

    return pad(tokenizer)


RUNNERS = {"baseline": run_baseline, "sft": run_sft, "engine": run_engine}


def _child(args) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    runner = RUNNERS[args.system]
    print("RESULT " + json.dumps(runner(args.technique, args)), flush=True)


def _run_in_child(system: str, technique: str, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--system",
        system,
        "--technique",
        technique,
        "--model",
        str(args.model),
        "--data",
        str(args.data),
        "--prompt-column",
        args.prompt_column,
        "--response-column",
        args.response_column,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--seed",
        str(args.seed),
    ]
    env = dict(os.environ)
    if args.allocator == "jemalloc":  # every system on the allocator Tailor's workers use where it is installed
        from app.worker_environment import find_jemalloc

        library = find_jemalloc()
        if library is None:
            raise SystemExit("--allocator jemalloc: no libjemalloc.so.2 on this machine")
        env["LD_PRELOAD"] = library
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{system}/{technique} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=next((p for p in MODEL_CANDIDATES if (p / "config.json").is_file()), None))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--prompt-column", default="question")
    parser.add_argument("--response-column", default="answer")
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--allocator",
        choices=("system", "jemalloc"),
        default="system",
        help="malloc of every system's process: glibc's, or jemalloc as Tailor's workers use where installed",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--technique", help=argparse.SUPPRESS)
    parser.add_argument("--preference", action="store_true", help="DPO against TRL's DPOTrainer (bench/preference_throughput.py)")
    args = parser.parse_args()
    if args.preference:
        sys.exit(subprocess.call([sys.executable, str(ROOT / "bench" / "preference_throughput.py"), *from_train_throughput(args)]))
    if args.child:
        _child(args)
        return
    if args.model is None:
        sys.exit("No model folder found; pass --model (convert one with python -m worker.training.loading <gguf> <out>).")

    print(
        f"model {args.model.name}, data {args.data.name}, {args.steps} steps x batch {args.batch_size}, "
        f"max_length {args.max_length}, allocator {args.allocator}"
    )
    figures = {}
    header = f"{'technique':<14} {'system':<9} {'real tok/s':>10} {'peak MB':>8} {'val loss':>9} {'seconds':>8}"
    print(header)
    for technique in [t.strip() for t in args.techniques.split(",") if t.strip()]:
        row = {}
        for system in ("baseline", "sft", "engine"):
            row[system] = result = _run_in_child(system, technique, args)
            print(
                f"{technique:<14} {system:<9} {result['tokens_per_second']:>10.1f} {result['peak_memory_bytes'] / 2**20:>8.0f} "
                f"{result['validation_loss']:>9.4f} {result['seconds']:>8.1f}",
                flush=True,
            )
        engine = row["engine"]
        for against in ("sft", "baseline"):  # TRL's SFTTrainer is the main baseline
            base = row[against]
            row["ratios" if against == "sft" else "ratios_padded_trainer"] = ratios = {
                "tokens_per_second": engine["tokens_per_second"] / base["tokens_per_second"],
                "peak_memory": engine["peak_memory_bytes"] / base["peak_memory_bytes"],
                "validation_loss_difference": engine["validation_loss"] - base["validation_loss"],
            }
            print(
                f"{technique:<14} {'/' + against:<9} {ratios['tokens_per_second']:>9.2f}x {ratios['peak_memory']:>7.2f}x "
                f"{ratios['validation_loss_difference']:>+9.4f}",
                flush=True,
            )
        figures[technique] = row
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
