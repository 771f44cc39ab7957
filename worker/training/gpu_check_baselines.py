"""The baselines of the prepared device check (worker/training/gpu_check.py), each trained on the
same synthetic rows, technique shape, batch, learning rate and steps as Tailor's engine:

- `run_trainer`: the plain script, transformers Trainer + PEFT, rows padded to the longest of each
  batch, loss on the answer tokens (what SFTTrainer's defaults do, without TRL);
- `run_sft`: TRL's SFTTrainer itself with its defaults for prompt-completion data (padding to the
  longest row of each batch, loss on the completion only), where TRL is installed.

Each returns real tokens (padding not counted), seconds, peak memory and steps.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _arguments(out: str, *, steps: int, batch_size: int, learning_rate: float, device: torch.device, seed: int) -> dict[str, Any]:
    """What the baselines share of transformers' TrainingArguments (SFTConfig extends them): the
    engine's steps, batch, learning rate, 10% linear warm-up, no weight decay; bf16 on a GPU; quiet."""
    return dict(
        output_dir=out,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=learning_rate,
        warmup_steps=max(1, round(0.1 * steps)),
        weight_decay=0.0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=seed,
        dataloader_num_workers=0,
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        use_cpu=device.type == "cpu",
        disable_tqdm=True,
    )


def _timed_train(trainer, device: torch.device) -> float:
    """Seconds of trainer.train() (the GPU's queue drained), without its log lines in the table."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def run_trainer(key: str, params: dict, folder: Path, rows, plan: Any, device: torch.device) -> dict:
    """The plain script: transformers Trainer + PEFT, rows padded to the longest of each batch."""
    from transformers import Trainer, TrainingArguments

    from worker.training.data import IGNORE_INDEX, pad_token_id, tokenize_rows
    from worker.training.loading import load_base_model
    from worker.training.memory import peak_memory_bytes, reset_peak_memory
    from worker.training.peft_factory import BuildContext, build_peft_model, builder_for

    reset_peak_memory(device)
    dtype = torch.bfloat16 if device.type == "cuda" and key != "full" else torch.float32
    model, tokenizer = load_base_model(folder, device, quantization_bits=builder_for(key).bits(params), dtype=dtype)
    examples = tokenize_rows(tokenizer, rows, plan.max_length).examples
    pad = pad_token_id(tokenizer)
    model = build_peft_model(model, key, params, BuildContext(total_steps=plan.steps, tokenizer_dir=str(folder)))
    counted = {"tokens": 0}

    def collate(features):
        n = max(len(f) for f in features)
        counted["tokens"] += sum(len(f) for f in features)
        return {
            "input_ids": torch.tensor([f.input_ids + [pad] * (n - len(f)) for f in features]),
            "attention_mask": torch.tensor([[1] * len(f) + [0] * (n - len(f)) for f in features]),
            "labels": torch.tensor([f.labels + [IGNORE_INDEX] * (n - len(f)) for f in features]),
        }

    with tempfile.TemporaryDirectory() as out:
        shared = _arguments(
            out, steps=plan.steps, batch_size=plan.batch_size, learning_rate=float(params["learning_rate"]), device=device, seed=42
        )
        args = TrainingArguments(**shared, remove_unused_columns=False)
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate)
        seconds = _timed_train(trainer, device)
    peak = peak_memory_bytes(device)
    del trainer, model
    return {"tokens": counted["tokens"], "seconds": seconds, "peak_memory_bytes": peak, "steps": plan.steps, "recomputed": False}


def sft_train(
    model,
    tokenizer,
    data,
    peft_config,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    max_length: int,
    device: torch.device,
    seed: int = 42,
) -> tuple[Any, int, float]:
    """TRL's SFTTrainer with its defaults for prompt-completion data (each batch padded to its
    longest row, loss on the completion only), no gradient checkpointing; the same arguments as
    the Trainer baseline. Returns (the trainer, real tokens trained on, seconds). Shared by
    scripts/gpu-check and bench/train_throughput.py."""
    from trl import SFTConfig, SFTTrainer

    counted = {"tokens": 0}
    with tempfile.TemporaryDirectory() as out:
        shared = _arguments(out, steps=steps, batch_size=batch_size, learning_rate=learning_rate, device=device, seed=seed)
        config = SFTConfig(**shared, max_length=max_length, gradient_checkpointing=False)
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=peft_config)
        compute_loss = trainer.compute_loss

        def counting(model, inputs, *args, **kwargs):  # counted where batches are used, not where they are prefetched
            mask = inputs.get("attention_mask")
            counted["tokens"] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            return compute_loss(model, inputs, *args, **kwargs)

        trainer.compute_loss = counting  # type: ignore[method-assign]
        seconds = _timed_train(trainer, device)
    return trainer, counted["tokens"], seconds


def run_sft(key: str, params: dict, folder: Path, rows, plan: Any, device: torch.device) -> dict:
    """TRL's SFTTrainer (sft_train): prompt-completion rows as plain text (the check's word-level
    tokenizer has no chat template), the same PEFT config as the engine's, bf16 on a GPU."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from datasets.utils.tqdm import disable_progress_bars  # type: ignore[import-untyped]

    from worker.training.loading import load_base_model
    from worker.training.memory import peak_memory_bytes, reset_peak_memory
    from worker.training.peft_factory import BuildContext, build_peft_config, builder_for

    disable_progress_bars()  # its bars would break up the table
    reset_peak_memory(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tokenizer = load_base_model(folder, device, quantization_bits=builder_for(key).bits(params), dtype=dtype)
    peft_config = build_peft_config(model, key, params, BuildContext(total_steps=plan.steps, tokenizer_dir=str(folder)))
    data = Dataset.from_list([{"prompt": prompt, "completion": " " + answer} for prompt, answer in rows])
    trainer, tokens, seconds = sft_train(
        model, tokenizer, data, peft_config, steps=plan.steps, batch_size=plan.batch_size,
        learning_rate=float(params["learning_rate"]), max_length=plan.max_length, device=device,
    )  # fmt: skip
    peak = peak_memory_bytes(device)
    del trainer, model
    return {"tokens": tokens, "seconds": seconds, "peak_memory_bytes": peak, "steps": plan.steps, "recomputed": False}
