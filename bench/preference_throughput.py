"""Preference training throughput: Tailor's DPO against TRL's DPOTrainer, in the same run.

Both train a LoRA adapter of the same shape (rank, alpha, all linear layers, no dropout) on the
same base model, the same pairs, batch size, learning rate, beta and number of optimizer steps,
fp32, no gradient checkpointing. TRL runs as documented for PEFT: the reference is the model
with the adapter disabled, computed each step (its default); Tailor computes the reference
log-probabilities once before the first step (that time is counted in its throughput).

Reported per system: real tokens/s (chosen + rejected + prompt tokens, padding not counted),
peak memory (each run in its own process: peak resident set on a CPU, peak allocated on CUDA)
and the final held-out reward accuracy (share of held-out pairs whose chosen answer gets the
higher implicit reward β·(log π − log π_ref), TRL's rewards/accuracies); then Tailor/TRL ratios.

    python bench/preference_throughput.py                  # the demo model (SmolLM2-135M) if installed
    python bench/preference_throughput.py --tiny           # the tests' tiny Llama, built in a temp folder
    python bench/preference_throughput.py --steps 8 --batch-size 4 --pairs 64

Pairs come from the sample support data: the shop's own answer is chosen, another question's
answer rejected.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT / "data" / "samples" / "northwind_support.csv"
MODEL_CANDIDATES = [
    Path(os.environ.get("TAILOR_DATA_DIR", ROOT / "var")) / "models" / "smollm2-135m-instruct",
    Path("/tmp/demo2/models/smollm2-135m-instruct"),
]


def make_pairs(path: Path, n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = [(r["question"].strip(), r["answer"].strip()) for r in csv.DictReader(f) if r["question"].strip() and r["answer"].strip()]
    rng = random.Random(seed)
    rng.shuffle(rows)
    rows = rows[:n]
    return [(q, a, rows[(i + 7) % len(rows)][1]) for i, (q, a) in enumerate(rows)]


def _peak_memory(device: str) -> int:
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_tailor(args, train, held_out) -> dict:
    import torch

    from worker.training.preference import PreferenceRecipe
    from worker.training.spec import TrainingSpec

    class Timed(PreferenceRecipe):
        reference_seconds = 0.0

        def _compute_reference(self) -> None:
            started = time.perf_counter()
            super()._compute_reference()
            self.reference_seconds = time.perf_counter() - started

    class Quiet:
        def on_progress(self, progress):
            pass

        def should_stop(self):
            return False

    spec = TrainingSpec(
        base_model_dir=str(args.model),
        technique="lora",
        params={
            "max_steps": args.steps,
            "epochs": 1000,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "max_length": args.max_length,
            "r": args.r,
            "alpha": 2 * args.r,
            "dropout": 0.0,
            "warmup_ratio": 0.0,
            "checkpoint_minutes": 0,
            "eval_steps": 10**6,  # held-out measured once, at the end
            "precision": "fp32",
            "gradient_checkpointing": "off",
            "preference_loss": "dpo",
            "preference_beta": args.beta,
        },
        train_rows=train,
        validation_rows=held_out,
        output_dir=tempfile.mkdtemp(prefix="pref-bench-"),
        task="preference",
        seed=args.seed,
    )
    recipe = Timed(spec, Quiet())
    result = recipe.run().result
    seconds = result.train_seconds - result.eval_seconds + recipe.reference_seconds
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "tokens_per_second": result.tokens_seen / seconds,
        "tokens": result.tokens_seen,
        "seconds": seconds,
        "reference_seconds": recipe.reference_seconds,
        "peak_memory_bytes": _peak_memory(device),
        "reward_accuracy": result.extra_metrics["reward_accuracy"],
        "reward_margin": result.extra_metrics["reward_margin"],
    }


def run_trl(args, train, held_out) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32)

    def dataset(rows):
        if tokenizer.chat_template:  # the same prompt rendering as Tailor's: the chat template
            return Dataset.from_list(
                [
                    {
                        "prompt": [{"role": "user", "content": p}],
                        "chosen": [{"role": "assistant", "content": c}],
                        "rejected": [{"role": "assistant", "content": r}],
                    }
                    for p, c, r in rows
                ]
            )
        from app.domain.task_kinds import render_plain_prompt

        return Dataset.from_list([{"prompt": render_plain_prompt(p), "chosen": c, "rejected": r} for p, c, r in rows])

    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        beta=args.beta,
        max_length=args.max_length,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        report_to=[],
        logging_steps=10**6,
        save_strategy="no",
        eval_strategy="no",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=model, args=config, train_dataset=dataset(train), eval_dataset=dataset(held_out), processing_class=tokenizer, peft_config=lora
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = int(trainer._total_train_tokens)
    metrics = trainer.evaluate()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "tokens_per_second": tokens / seconds,
        "tokens": tokens,
        "seconds": seconds,
        "peak_memory_bytes": _peak_memory(device),
        "reward_accuracy": float(metrics["eval_rewards/accuracies"]),
        "reward_margin": float(metrics["eval_rewards/margins"]),
    }


SYSTEMS = {"trl": run_trl, "tailor": run_tailor}


def _child(args) -> None:
    pairs = make_pairs(args.data, args.pairs + args.held_out, seed=args.seed)
    train, held_out = pairs[: args.pairs], pairs[args.pairs :]
    print("RESULT " + json.dumps(SYSTEMS[args.system](args, train, held_out)))


def _run_in_child(system: str, args) -> dict:
    command = [sys.executable, __file__, "--child", "--system", system, "--model", str(args.model), "--data", str(args.data)]
    for name in ("steps", "batch_size", "max_length", "pairs", "held_out", "r", "learning_rate", "beta", "seed"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRL_EXPERIMENTAL_SILENCE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"{system} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def _tiny_model() -> Path:
    from tests.tiny_model import build_tiny_llama

    return build_tiny_llama(Path(tempfile.mkdtemp(prefix="tiny-llama-")) / "tiny", chat=True)


def from_train_throughput(args) -> list[str]:
    """bench/train_throughput.py --preference: its model, steps, batch, length and seed as our options."""
    given = [
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--seed",
        str(args.seed),
    ]
    return given + (["--model", str(args.model)] if args.model else ["--tiny"])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="use the tests' tiny Llama (built in a temp folder)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        _child(args)
        return {}
    if args.tiny:
        args.model = _tiny_model()
    elif args.model is None:
        args.model = next((p for p in MODEL_CANDIDATES if (p / "config.json").is_file()), None)
    if args.model is None:
        sys.exit("No model folder found; pass --model, or --tiny for the tests' tiny Llama.")
    print(
        f"DPO, model {args.model.name}, {args.pairs} pairs ({args.held_out} held out), {args.steps} steps x batch {args.batch_size}, "
        f"max_length {args.max_length}, LoRA r={args.r}"
    )
    print(f"{'system':<8} {'real tok/s':>10} {'peak MB':>8} {'reward acc':>10} {'margin':>8} {'seconds':>8}")
    figures: dict = {}
    for system in ("trl", "tailor"):
        figures[system] = r = _run_in_child(system, args)
        print(
            f"{system:<8} {r['tokens_per_second']:>10.1f} {r['peak_memory_bytes'] / 2**20:>8.0f} {r['reward_accuracy']:>10.3f} "
            f"{r['reward_margin']:>8.3f} {r['seconds']:>8.1f}",
            flush=True,
        )
    trl, tailor = figures["trl"], figures["tailor"]
    figures["ratios"] = {
        "tokens_per_second": tailor["tokens_per_second"] / trl["tokens_per_second"],
        "peak_memory": tailor["peak_memory_bytes"] / trl["peak_memory_bytes"],
        "reward_accuracy_difference": tailor["reward_accuracy"] - trl["reward_accuracy"],
    }
    ratios = figures["ratios"]
    print(
        f"{'ratio':<8} {ratios['tokens_per_second']:>9.2f}x {ratios['peak_memory']:>7.2f}x {ratios['reward_accuracy_difference']:>+10.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
