"""The prepared device check: Tailor's training engine against TRL's SFTTrainer and a plain Trainer + PEFT script.

    scripts/gpu-check OUT_DIR            # one NVIDIA GPU: ~0.5 B and ~1.5 B models, bf16 + SDPA
    scripts/gpu-check OUT_DIR --smoke    # any machine: tiny models, a few steps (under a minute)

No network, no database, no Celery: random-weight Llama models are built from configs shaped
like Qwen2.5-0.5B and Qwen2.5-1.5B (same widths, depths, vocabulary; Llama architecture) and
saved with a locally built word-level tokenizer, then every listed technique trains on the same
synthetic instruction rows (prompt and answer lengths drawn from log-normal distributions, the
spread of real support data), one pass over them, through `TrainingRecipe` exactly as a job
does, and through the plain `transformers.Trainer` + PEFT (rows padded to the longest in each
batch, bf16, SDPA) in the same run; LoRA also through TRL's `SFTTrainer` with its prompt-completion
defaults where TRL is installed (Tailor's own install has it; a bare GPU machine may not, and
then says so). The baselines: worker/training/gpu_check_baselines.py. Per technique and system it reports real tokens/s (padding
not counted), model FLOP utilisation and peak GPU memory; a table on stdout and `gpu_check.json`
in OUT_DIR.

MFU = model FLOPs / (seconds x the GPU's dense bf16 peak), with model FLOPs per run =
    k * N_layers * T_real  +  k * N_head * T_loss  +  12 * L * h * sum(len_row^2)
where N_layers are the weights of the transformer layers' matrix products, N_head the output
layer's (vocab x hidden), T_real the real tokens, T_loss the tokens that carry the loss, L the
layers, h the hidden width; k = 6 for full fine-tuning (forward 2N, input gradients 2N, weight
gradients 2N) and k = 4 for adapter techniques (no weight gradients for frozen weights; the
adapters' own FLOPs, < 1%, are left out). The last term is attention (scores and values,
forward 4 + backward 8, causal masking not halved). Recomputation under gradient checkpointing is
not counted (it is not model work), so MFU is comparable between systems. The engine runs with
gradient checkpointing "auto", as a job does: on a GPU it recomputes activations only where the
job would not fit without (the `recompute` column; the Trainer baseline never does).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.training.gpu_check_baselines import run_sft, run_trainer

# (name, LlamaConfig keyword arguments)
MODELS: dict[str, dict] = {
    "0.5b": dict(
        hidden_size=896, num_hidden_layers=24, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936
    ),
    "1.5b": dict(
        hidden_size=1536, num_hidden_layers=28, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936
    ),
}
SMOKE_MODELS: dict[str, dict] = {
    "smoke": dict(
        hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=1000
    ),
}
# technique -> (catalogue key, extra parameters)
TECHNIQUES: dict[str, tuple[str, dict]] = {
    "lora": ("lora", {}),
    "dora": ("dora", {}),
    "ia3": ("ia3", {}),
    "prompt_tuning": ("prompt_tuning", {"init": "random"}),
    "full": ("full", {}),
    "qlora": ("qlora", {"bits": "4"}),
}
SFT_TECHNIQUES = ("lora",)  # TRL's SFTTrainer, the baseline peers build on, next to the engine for these
# Dense bf16 peak FLOP/s (no sparsity) by a part of the device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "GH200": 989e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


@dataclass(frozen=True)
class Plan:
    models: dict[str, dict]
    techniques: list[str]
    steps: int
    batch_size: int
    max_length: int
    smoke: bool


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in sorted(PEAK_BF16.items(), key=lambda kv: -len(kv[0])):
        if key in name:
            return value
    return None


def build_model_folder(folder: Path, shape: dict, device: torch.device) -> Path:
    """A random-weight Llama of `shape` and a word-level tokenizer ("w0 w1 ..."), saved like a job's base model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = shape["vocab_size"]
    words = {"<unk>": 0, "<pad>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(vocab - 3)}}
    core = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=2, pad_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1.5 B weights on the GPU takes a second, on the CPU a minute
        model: Any = LlamaForCausalLM(config)
        model = model.to(torch.bfloat16 if device.type == "cuda" else torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    _free(device)
    return folder


def synthetic_rows(n: int, vocab: int, max_length: int, seed: int = 0) -> list[tuple[str, str]]:
    """Instruction rows of random words; prompt and answer lengths log-normal (medians 60 and 120
    tokens, long tails), capped so a row fits in max_length."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = min(max_length // 2, max(4, int(rng.lognormvariate(math.log(max_length * 60 / 1024 + 4), 0.7))))
        answer = min(max_length - prompt - 16, max(4, int(rng.lognormvariate(math.log(max_length * 120 / 1024 + 4), 0.8))))
        rows.append(
            (
                " ".join(f"w{rng.randrange(vocab - 3)}" for _ in range(prompt)),
                " ".join(f"w{rng.randrange(vocab - 3)}" for _ in range(answer)),
            )
        )
    return rows


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _params(technique: str, plan: Plan) -> tuple[str, dict]:
    from app.domain.techniques import CATALOGUE, validate_params

    key, extra = TECHNIQUES[technique]
    values = {**extra, "batch_size": plan.batch_size, "max_length": plan.max_length, "epochs": 1, "max_steps": plan.steps}
    # "auto", as a job: on a GPU, activations are recomputed only where they would not fit (an H200 keeps them)
    values.update(warmup_ratio=0.1, checkpoint_minutes=0, gradient_checkpointing="auto")
    return key, validate_params(CATALOGUE[key], values)


def model_flops(shape: dict, lengths: list[int], loss_tokens: int, full: bool) -> float:
    """The formula in the module docstring, for the rows trained."""
    h, layers, i, vocab = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    n_layers = layers * (2 * h * h + 2 * h * kv + 3 * h * i)
    k = 6 if full else 4
    return k * n_layers * sum(lengths) + k * vocab * h * loss_tokens + 12 * layers * h * sum(n * n for n in lengths)


def run_engine(key: str, params: dict, folder: Path, rows, plan: Plan, device: torch.device) -> dict:
    """Tailor's engine: TrainingRecipe, length-grouped batches, chunked loss."""
    from worker.training.loop import run_training
    from worker.training.spec import TrainingSpec

    class Quiet:
        def on_progress(self, progress):
            pass

        def should_stop(self):
            return False

    with tempfile.TemporaryDirectory() as out:
        spec = TrainingSpec(str(folder), key, params, train_rows=rows, validation_rows=[], output_dir=str(Path(out) / "adapter"))
        run = run_training(spec, Quiet())
    result = run.result
    del run
    seconds = result.train_seconds - result.eval_seconds
    return {
        "tokens": result.tokens_seen,
        "seconds": seconds,
        "peak_memory_bytes": result.peak_memory_bytes,
        "steps": result.steps,
        "recomputed": bool(result.environment.get("gradient_checkpointing")),
    }


def sft_skip_reason(technique: str) -> str | None:
    """TRL's SFTTrainer runs for LoRA (the issue's goal) where TRL imports; else why not."""
    if technique not in SFT_TECHNIQUES:
        return f"SFTTrainer is compared on {', '.join(SFT_TECHNIQUES)} only (time)"
    if importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None:
        return "TRL (and its datasets) are not installed here: Tailor's own install has them"
    return None


def skip_reason(technique: str, device: torch.device, smoke: bool) -> str | None:
    if technique != "qlora":
        return None
    if device.type != "cuda":
        return "QLoRA's 4-bit kernels need CUDA in this check"
    try:
        importlib.import_module("bitsandbytes")
    except Exception as exc:  # noqa: BLE001 - any import failure is the reason to skip
        return f"bitsandbytes does not import ({type(exc).__name__}: {exc})"[:200]
    return None


def distributed_smoke() -> dict:
    """The distributed training's own device smoke, when that module offers one."""
    try:
        module = importlib.import_module("worker.training.distributed")
    except ImportError:
        return {"status": "not available", "reason": "worker.training.distributed is not installed"}
    smoke = getattr(module, "gpu_smoke", None)
    if smoke is None:
        return {"status": "not available", "reason": "worker.training.distributed has no gpu_smoke()"}
    try:
        return {"status": "ran", "result": smoke()}
    except Exception as exc:  # noqa: BLE001 - reported, the rest of the check stands
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}


def check(plan: Plan, out_dir: Path) -> dict:
    from worker.training.data import tokenize_rows
    from worker.training.loading import load_tokenizer, pick_device

    device = pick_device()
    peak = peak_flops(device)
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "peak_bf16_flops": peak,
        "plan": {"steps": plan.steps, "batch_size": plan.batch_size, "max_length": plan.max_length, "smoke": plan.smoke},
        "mfu_formula": "k*N_layers*T_real + k*N_head*T_loss + 12*L*h*sum(len^2); k=6 full, 4 adapters",
        "results": [],
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in plan.models.items():
            folder = build_model_folder(Path(tmp) / name, shape, device)
            rows = synthetic_rows(plan.steps * plan.batch_size, shape["vocab_size"], plan.max_length)
            examples = tokenize_rows(load_tokenizer(folder), rows, plan.max_length).examples
            lengths = [len(e) for e in examples]
            loss_tokens = sum(sum(1 for label in e.labels[1:] if label != -100) for e in examples)
            for technique in plan.techniques:
                reason = skip_reason(technique, device, plan.smoke)
                if reason:
                    report["results"].append({"model": name, "technique": technique, "skipped": reason})
                    continue
                flops = model_flops(shape, lengths, loss_tokens, full=TECHNIQUES[technique][0] == "full")
                key, params = _params(technique, plan)
                for system, runner in (("tailor", run_engine), ("trainer", run_trainer), ("sft", run_sft)):
                    row: dict[str, Any] = {"model": name, "technique": technique, "system": system}
                    if system == "sft" and (why := sft_skip_reason(technique)):
                        if technique in SFT_TECHNIQUES:  # said once per model; other techniques simply have no row
                            report["results"].append({**row, "skipped": why})
                            print(_line(report["results"][-1]), flush=True)
                        continue
                    try:
                        figures = runner(key, params, folder, rows, plan, device)
                        row.update(figures, tokens_per_second=figures["tokens"] / figures["seconds"])
                        row["mfu"] = flops / figures["seconds"] / peak if peak else None
                    except Exception as exc:  # noqa: BLE001 - one failing technique must not hide the others
                        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
                    _free(device)
                    report["results"].append(row)
                    print(_line(row), flush=True)
            shutil_rmtree(folder)
    report["distributed"] = distributed_smoke()
    report["seconds"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2))
    return report


def shutil_rmtree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


HEADER = f"{'model':<6} {'technique':<14} {'system':<8} {'real tok/s':>11} {'MFU':>6} {'peak GB':>8} {'seconds':>8} recompute"


def _line(row: dict) -> str:
    head = f"{row['model']:<6} {row['technique']:<14} {row.get('system', '-'):<8}"
    if "skipped" in row:
        return f"{head} skipped: {row['skipped']}"
    if "error" in row:
        return f"{head} error: {row['error']}"
    mfu = f"{row['mfu'] * 100:5.1f}%" if row.get("mfu") is not None else "   n/a"
    recompute = "yes" if row.get("recomputed") else "no"
    return f"{head} {row['tokens_per_second']:>11.1f} {mfu:>6} {row['peak_memory_bytes'] / 1e9:>8.2f} {row['seconds']:>8.1f} {recompute}"


def summary(report: dict) -> list[str]:
    """Tailor / SFTTrainer and Tailor / Trainer ratios of real tokens/s and peak memory per model and technique."""
    by_key: dict[tuple, dict] = {}
    for row in report["results"]:
        if "tokens_per_second" in row:
            by_key.setdefault((row["model"], row["technique"]), {})[row["system"]] = row
    lines = []
    for (model, technique), pair in by_key.items():
        for baseline in ("sft", "trainer"):
            if "tailor" in pair and baseline in pair:
                speed = pair["tailor"]["tokens_per_second"] / pair[baseline]["tokens_per_second"]
                memory = pair["tailor"]["peak_memory_bytes"] / max(1, pair[baseline]["peak_memory_bytes"])
                lines.append(f"{model:<6} {technique:<14} tailor/{baseline}: {speed:.2f}x tokens/s, {memory:.2f}x peak memory")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tailor's prepared GPU check (see the module docstring).")
    parser.add_argument("out_dir", type=Path, help="folder for gpu_check.json")
    parser.add_argument("--smoke", action="store_true", help="tiny models and a few steps, on any device (under a minute on a CPU)")
    parser.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    args = parser.parse_args(argv)
    table = SMOKE_MODELS if args.smoke else MODELS
    names = args.models.split(",") if args.models else list(table)
    unknown = [n for n in names if n not in table] + [t for t in args.techniques.split(",") if t not in TECHNIQUES]
    if unknown:
        parser.error(f"unknown model or technique: {', '.join(unknown)}")
    plan = Plan(
        models={n: table[n] for n in names},
        techniques=args.techniques.split(","),
        steps=args.steps or (2 if args.smoke else 24),
        batch_size=args.batch_size or (4 if args.smoke else 8),
        max_length=args.max_length or (48 if args.smoke else 1024),
        smoke=args.smoke,
    )
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    print(HEADER, flush=True)
    report = check(plan, args.out_dir)
    for line in summary(report):
        print(line)
    print(
        f"distributed smoke: {report['distributed']['status']}"
        + (f" ({report['distributed'].get('reason')})" if "reason" in report["distributed"] else "")
    )
    print(f"done in {report['seconds']:.0f} s; JSON in {args.out_dir / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
