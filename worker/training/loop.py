"""The training run as a recipe: spec in, adapter on disk and a TrainingResult out.

An own loop rather than HF Trainer, so progress, cancel and checkpoints are plain function
calls. TrainingRecipe goes through setup (load, tokenize, build), resume (from the last
checkpoint), train (optimizer steps, held-out checks, early stopping, periodic checkpoints)
and save. Where techniques differ it calls the hooks on the technique's Builder in
peft_factory.BUILDERS; the pieces it is made of live in their own modules (schedule, steps,
precision, held_out, checkpoints, saving, progress, provenance, memory).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from app.domain.task_kinds import get_task_kind
from worker.training.checkpoints import load_checkpoint, save_checkpoint
from worker.training.data import collate, label_names_of, pack_examples, pad_token_id, split_to_token_budget, tokenize_for_task
from worker.training.held_out import evaluate_accuracy, evaluate_loss
from worker.training.loading import load_base_model, pick_device
from worker.training.memory import (
    fits_without_recompute,
    micro_batch_tokens,
    peak_memory_bytes,
    reset_peak_memory,
    wants_gradient_checkpointing,
)
from worker.training.peft_factory import BuildContext, builder_for
from worker.training.precision import precision_for
from worker.training.progress import LoopState, recent_train_loss, report_progress
from worker.training.provenance import data_fingerprint, environment_record
from worker.training.saving import AdapterFiles, save_adapter
from worker.training.schedule import epoch_step_groups, lr_factor, plan_steps, seed_everything
from worker.training.spec import TrainingCallbacks, TrainingResult, TrainingSpec, resolve_params
from worker.training.steps import accumulate_gradients, optimizer_step
from worker.training.swiglu import fuse_swiglu


@dataclass
class TrainingRun:
    """The result plus the trained model and tokenizer (for callers that evaluate next)."""

    result: TrainingResult
    model: Any
    tokenizer: Any


def _trainable_counts(model) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


class TrainingRecipe:
    """One training run of `spec`, talking back through `callbacks`.

    run() = setup, resume, train, save. With `spec.checkpoint_dir` the run checkpoints every
    `checkpoint_minutes` and, when a checkpoint is already there, resumes from it (same seed,
    same data -> the same adapter).
    """

    def __init__(self, spec: TrainingSpec, callbacks: TrainingCallbacks):
        self.spec = spec
        self.callbacks = callbacks
        self.builder = builder_for(spec.technique)
        self.params = resolve_params(spec.technique, spec.params)
        self.task_kind = get_task_kind(spec.task)
        self.state = LoopState()
        self.files: AdapterFiles | None = None  # the technique's writer, started once the model is built
        self.status = "completed"
        self.stopped_early = False
        self.final_validation_loss: float | None = None  # the last held-out check in the loop
        self.validation_loss: float | None = None
        self.accuracy: float | None = None

    def run(self) -> TrainingRun:
        """Train and save the adapter (unless cancelled); also return the in-memory model."""
        try:
            self.setup()
            self.resume()
            self.train()
            self.save()
        finally:
            self.close()
        return TrainingRun(result=self.result(), model=self.model, tokenizer=self.tokenizer)

    # --- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the base model, tokenize the rows, plan the steps, build the model to train."""
        spec, params = self.spec, self.params
        seed_everything(spec.seed)
        self.device = pick_device()
        reset_peak_memory(self.device)
        self.load_dtype, self.precision = precision_for(params, self.device, fp32_weights=self.builder.fp32_weights)
        self.label_names = self._label_names()
        base_model, self.tokenizer = load_base_model(
            spec.base_model_dir,
            self.device,
            task=spec.task,
            label_names=self.label_names,
            quantization_bits=self.builder.bits(params),
            dtype=self.load_dtype,
        )
        self._tokenize()
        self.plan = plan_steps(len(self.train_examples), params)

        seed_everything(spec.seed)  # adapter initialisation does not depend on how loading went
        context = BuildContext(
            task=spec.task,
            total_steps=self.plan.total_steps,
            tokenizer_dir=str(spec.base_model_dir),
            parent_adapter_dir=spec.parent_adapter_dir,
        )
        self.model = self.builder.build_model(base_model, params, context)
        self.files = self.builder.files(self.model)
        fuse_swiglu(self.model)  # keeps gate and up only for the MLP's backward (worker/training/swiglu.py)
        self.recomputes = wants_gradient_checkpointing(params, self.device, self._fits_without_recompute)
        if self.recomputes:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(self.model, "enable_input_require_grads"):
                self.model.enable_input_require_grads()
        self.model.train()
        self.micro_batch_tokens = micro_batch_tokens(params, self.device)
        self.distribute_model()

        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=float(params["learning_rate"]), weight_decay=0.0)
        plan = self.plan
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: lr_factor(i, plan))
        self.trainable_count, self.total_count = _trainable_counts(self.model)

    def _fits_without_recompute(self) -> bool:
        """ "auto" on a GPU: whether this job's activations fit in the device's memory as they are:
        what is free plus what this process holds already (its model), so a serving engine or
        another job on the same GPU counts against it."""
        free, _total = torch.cuda.mem_get_info(self.device)
        return fits_without_recompute(
            str(self.spec.base_model_dir),
            self.spec.technique,
            self.params,
            self.spec.task,
            self.example_lengths,
            int(free + torch.cuda.memory_reserved(self.device)),
            quantized_bits=int(self.builder.bits(self.params) or 0),
            num_labels=len(self.label_names or []),
        )

    def _label_names(self) -> list[str] | None:
        if not self.task_kind.has_labels:
            return None
        names = label_names_of(list(self.spec.train_rows) + list(self.spec.validation_rows))
        if len(names) < 2:
            raise ValueError("Classification needs at least two different labels in the label column.")
        return names

    def _tokenize(self) -> None:
        spec, max_length = self.spec, int(self.params["max_length"])
        self.train_examples = tokenize_for_task(self.tokenizer, spec.task, spec.train_rows, max_length, self.label_names).examples
        self.validation_examples = tokenize_for_task(self.tokenizer, spec.task, spec.validation_rows, max_length, self.label_names).examples
        if not self.train_examples:
            raise ValueError(f"No training row fits in max_length={max_length} tokens; raise max_length or shorten the prompts.")
        self.pad_id = pad_token_id(self.tokenizer)
        if self.packing_applies():
            self.train_examples = pack_examples(self.train_examples, max_length)
        self.example_lengths = [len(example) for example in self.train_examples]

    def distribute_model(self) -> None:
        """Hook: spread the built model over a process group (worker/training/distributed.py)."""

    def packing_applies(self) -> bool:
        """Packing is asked for, and safe: causal tasks, techniques that add no virtual tokens or cache."""
        return str(self.params.get("packing", "off")) == "on" and not self.task_kind.has_labels and self.builder.packs_examples

    # --- resume -------------------------------------------------------------------------------

    def resume(self) -> None:
        """Continue from the checkpoint in spec.checkpoint_dir, when there is one."""
        if not self.spec.checkpoint_dir:
            return
        restored = load_checkpoint(self.spec.checkpoint_dir, self.model, self.optimizer, self.scheduler, self.precision)
        if restored is not None:
            self.state = restored
            self.state.resumed_from_step = self.state.step

    # --- train --------------------------------------------------------------------------------

    def train(self) -> None:
        """Optimizer steps until the plan is done, the caller cancels or early stopping ends it."""
        params, plan, state = self.params, self.plan, self.state
        self.eval_every = int(params["eval_steps"]) or plan.steps_per_epoch
        self.patience = int(params["early_stopping_patience"])
        self.checkpoint_seconds = float(params["checkpoint_minutes"]) * 60
        self.elapsed_before, self.tokens_before, self.eval_before = state.train_seconds, state.tokens_seen, state.eval_seconds
        self.started = last_checkpoint = time.perf_counter()
        checkpoint_dir = self.spec.checkpoint_dir
        while state.step < plan.total_steps and self.status == "completed" and not self.stopped_early:
            groups = epoch_step_groups(self.train_examples, params, self.spec.seed, state.epoch)
            for group in groups[state.epoch_step :]:
                if not self._step(group):
                    self.status = "cancelled"
                    break
                now = time.perf_counter()
                if checkpoint_dir and self._checkpoint_due(now - last_checkpoint):
                    self._checkpoint(checkpoint_dir, now)
                    last_checkpoint = time.perf_counter()
                if state.step >= plan.total_steps or self.stopped_early:
                    break
            else:
                state.epoch += 1
                state.epoch_step = 0
        state.train_seconds = self.elapsed_before + time.perf_counter() - self.started

    def _step(self, group: list[list[int]]) -> bool:
        """One optimizer step over `group`'s micro-batches; False when the caller cancelled."""
        state = self.state
        step_loss = self._accumulate(group)
        if step_loss is None:
            return False
        learning_rate, grad_norm = optimizer_step(
            self.optimizer, self.scheduler, self.trainable, self.precision, self._after_optimizer_step()
        )
        state.step += 1
        state.epoch_step += 1
        state.step_losses.append(step_loss)
        validation_loss = self._held_out_check()
        report_progress(
            self.callbacks,
            state,
            self.plan,
            step_loss,
            learning_rate,
            self.started,
            grad_norm=grad_norm,
            validation_loss=validation_loss,
            device=self.device,
            elapsed_before=self.elapsed_before,
            tokens_before=self.tokens_before,
            eval_before=self.eval_before,
        )
        return True

    def _accumulate(self, group: list[list[int]]) -> float | None:
        """Forward/backward one step's micro-batches; its mean loss, None if cancelled (a task
        kind's recipe, e.g. worker/training/preference.py, brings its own)."""
        examples, budget = self.train_examples, self.micro_batch_tokens
        lengths = self.example_lengths
        batches = [
            collate([examples[i] for i in part], self.pad_id)
            for indices in group
            for part in split_to_token_budget(indices, lengths, budget)
        ]
        return accumulate_gradients(self.model, batches, self.device, self.state, self.callbacks, self.precision)

    def _after_optimizer_step(self):
        """The technique's hook, bound to this run (it sees the steps done before this one)."""
        hook = self.builder.after_optimizer_step
        if hook is None:
            return None
        return lambda: hook(self.model, self.state.step)

    def _held_out_check(self) -> float | None:
        """Held-out loss every eval_every steps and at the end; updates early stopping."""
        state = self.state
        if not self.validation_examples or (state.step % self.eval_every != 0 and state.step < self.plan.total_steps):
            return None
        eval_started = time.perf_counter()
        validation_loss = self._validation_loss()
        state.eval_seconds += time.perf_counter() - eval_started
        self.final_validation_loss = validation_loss
        if validation_loss is None:  # no held-out examples, which the check above excludes
            return None
        if state.best_validation_loss is None or validation_loss < state.best_validation_loss - 1e-6:
            state.best_validation_loss = validation_loss
            state.checks_without_improvement = 0
        else:
            state.checks_without_improvement += 1
            self.stopped_early = self.patience > 0 and state.checks_without_improvement >= self.patience
        return validation_loss

    def _validation_loss(self) -> float | None:
        return evaluate_loss(self.model, self.validation_examples, int(self.params["batch_size"]), self.pad_id, self.device, self.precision)

    def _checkpoint_due(self, since_last: float) -> bool:
        return bool(
            self.spec.checkpoint_dir
            and self.checkpoint_seconds > 0
            and since_last >= self.checkpoint_seconds
            and self.state.step < self.plan.total_steps
            and not self.stopped_early
        )

    def _checkpoint(self, checkpoint_dir: str, now: float) -> None:
        self.state.train_seconds = self.elapsed_before + now - self.started
        save_checkpoint(checkpoint_dir, self.model, self.optimizer, self.scheduler, self.state, self.precision)
        if hasattr(self.callbacks, "on_checkpoint"):
            self.callbacks.on_checkpoint()

    # --- save ---------------------------------------------------------------------------------

    def save(self) -> None:
        """Measure the final weights and write the result; nothing when the run was cancelled."""
        if self.status != "completed":
            return
        if self.files is None:
            raise RuntimeError("save() needs setup() first: setup starts the technique's writer.")
        state = self.state
        # The loop measured the final weights already unless it stopped early between checks.
        measured = state.step_losses and self.final_validation_loss is not None and state.step >= self.plan.total_steps
        self.validation_loss = self.final_validation_loss if measured else self._validation_loss()
        self.accuracy = evaluate_accuracy(self.model, self.validation_examples, int(self.params["batch_size"]), self.pad_id, self.device)
        self.write_adapter()

    def write_adapter(self) -> None:
        """Hook: write the adapter (a process group writes it once, from rank 0)."""
        assert self.files is not None  # save() checked it
        save_adapter(self.model, self.spec.output_dir, self.files, tokenizer=self.tokenizer, label_names=self.label_names)

    def close(self) -> None:
        """Remove what the technique's writer kept for saving (PiSSA's starting adapter)."""
        if self.files is not None:
            self.files.close()

    def result(self) -> TrainingResult:
        state, spec = self.state, self.spec
        return TrainingResult(
            status=self.status,
            steps=state.step,
            train_loss=recent_train_loss(state, self.plan),
            validation_loss=self.validation_loss,
            trainable_parameters=int(self.trainable_count),
            total_parameters=int(self.total_count),
            train_seconds=state.train_seconds,
            tokens_seen=state.tokens_seen,
            peak_memory_bytes=peak_memory_bytes(self.device),
            best_validation_loss=state.best_validation_loss,
            eval_seconds=state.eval_seconds,
            stopped_early=self.stopped_early,
            resumed_from_step=state.resumed_from_step,
            data_sha256=data_fingerprint(spec.task, spec.train_rows, spec.validation_rows),
            environment={
                **environment_record(self.device, self.precision.dtype or self.load_dtype),
                "gradient_checkpointing": self.recomputes,
            },
            label_names=self.label_names,
            validation_accuracy=self.accuracy,
        )


def run_training(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingRun:
    """Train and save the adapter (unless cancelled); also return the in-memory model."""
    return TrainingRecipe(spec, callbacks).run()


def train(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingResult:
    """Train `spec` with progress and cancel through `callbacks`; saves the adapter if completed."""
    return run_training(spec, callbacks).result
