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


def run_trainer(key: str, params: dict, folder: Path, rows, plan: Any, device: torch.device) -> dict:
    """The plain script: transformers Trainer + PEFT, rows padded to the longest of each batch."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

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
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=plan.batch_size,
            max_steps=plan.steps,
            learning_rate=float(params["learning_rate"]),
            warmup_steps=max(1, round(0.1 * plan.steps)),
            weight_decay=0.0,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            remove_unused_columns=False,
            dataloader_num_workers=0,
            bf16=device.type == "cuda",
            use_cpu=device.type == "cpu",
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate)
        trainer.remove_callback(PrinterCallback)  # its log lines would break up the table
        started = time.perf_counter()
        trainer.train()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    peak = peak_memory_bytes(device)
    del trainer, model
    return {"tokens": counted["tokens"], "seconds": seconds, "peak_memory_bytes": peak, "steps": plan.steps, "recomputed": False}


def run_sft(key: str, params: dict, folder: Path, rows, plan: Any, device: torch.device) -> dict:
    """TRL's SFTTrainer: prompt-completion rows as plain text (the check's word-level tokenizer has
    no chat template), the same PEFT config as the engine's, bf16 on a GPU, no checkpointing (the
    engine on an H200 keeps its activations too), real tokens counted where batches are used."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from datasets.utils.tqdm import disable_progress_bars  # type: ignore[import-untyped]
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from worker.training.loading import load_base_model
    from worker.training.memory import peak_memory_bytes, reset_peak_memory
    from worker.training.peft_factory import BuildContext, build_peft_config, builder_for

    disable_progress_bars()  # its bars would break up the table
    reset_peak_memory(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tokenizer = load_base_model(folder, device, quantization_bits=builder_for(key).bits(params), dtype=dtype)
    peft_config = build_peft_config(model, key, params, BuildContext(total_steps=plan.steps, tokenizer_dir=str(folder)))
    data = Dataset.from_list([{"prompt": prompt, "completion": " " + answer} for prompt, answer in rows])
    counted = {"tokens": 0}
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=plan.batch_size,
            max_steps=plan.steps,
            learning_rate=float(params["learning_rate"]),
            warmup_steps=max(1, round(0.1 * plan.steps)),
            weight_decay=0.0,
            max_length=plan.max_length,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            bf16=device.type == "cuda",
            gradient_checkpointing=False,
            use_cpu=device.type == "cpu",
            disable_tqdm=True,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=peft_config)
        trainer.remove_callback(PrinterCallback)
        compute_loss = trainer.compute_loss

        def counting(model, inputs, *args, **kwargs):
            mask = inputs.get("attention_mask")
            counted["tokens"] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            return compute_loss(model, inputs, *args, **kwargs)

        trainer.compute_loss = counting  # type: ignore[method-assign]
        started = time.perf_counter()
        trainer.train()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    peak = peak_memory_bytes(device)
    del trainer, model
    return {"tokens": counted["tokens"], "seconds": seconds, "peak_memory_bytes": peak, "steps": plan.steps, "recomputed": False}
