"""One training run over a process group: the same recipe on every rank, DDP or FSDP2.

`run_engine` is THE engine function: a world of one runs the plain TrainingRecipe in this
process; a rank started by `torch.distributed.run` (worker/launcher.py) or by Ray Train
(worker/ray_cluster.py) runs DistributedRecipe, the same recipe with four hooks filled in:

- distribute_model: DistributedDataParallel, or FSDP2 `fully_shard` on every decoder layer and the
  root (mixed precision per device kind, optional CPU offload of parameters and optimiser state).
- _accumulate: the optimizer step is the same global batch whatever the world size (the plan,
  the data order and the learning-rate curve do not depend on the layout); each rank takes every
  world-th example of each micro-batch and weighs its loss by the step's global token count, so
  the averaged gradient is exactly the one-process gradient. A rank whose share of a micro-batch
  is empty runs a batch whose labels are all ignored: every rank makes the same collective calls.
- checkpoints: rank 0 writes the one checkpoint file the single-process recipe writes (full LoRA
  weights, optimiser state by parameter index, schedule, loop state, random generators); under FSDP
  the full state is gathered with torch.distributed.checkpoint's state-dict API and scattered back
  on load, which reshards it for any number of devices. Adapter weights are small (MBs even for a
  70B base), so one full file is cheap, and the same file resumes a world of one, two or eight.
- write_adapter: rank 0 writes the adapter once (FSDP: from the gathered full state dict).

Every process group has a timeout, so a dead rank fails the others instead of hanging them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from functools import partial
from typing import Any, cast

import torch
import torch.distributed as dist

from worker.training.checkpoints import load_checkpoint, save_checkpoint
from worker.training.data import IGNORE_INDEX, collate
from worker.training.loop import TrainingRecipe, TrainingRun
from worker.training.recipes import run_training
from worker.training.spec import TrainingCallbacks, TrainingSpec
from worker.training.steps import micro_step, predicted_token_count, to_device

STRATEGIES = ("single", "ddp", "fsdp", "qlora_fsdp")
SHARDED = ("fsdp", "qlora_fsdp")


@dataclass(frozen=True)
class EngineLayout:
    """How one run spreads over devices (decided by app/domain/layouts.py)."""

    strategy: str = "single"
    cpu_offload: bool = False
    timeout_seconds: float = 300.0  # every collective of the process group gives up after this

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineLayout:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world: int
    local_rank: int


def backend_for(device_kind: str) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device_kind == "cuda" else "gloo"


def init_process_group(layout: EngineLayout) -> tuple[RankInfo, bool]:
    """Join the process group described by the environment (torchrun or Ray set it); returns
    (this rank, whether we created the group). Ray Train creates it itself."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % max(1, torch.cuda.device_count()))
    created = False
    if not dist.is_initialized():
        backend = backend_for("cuda" if torch.cuda.is_available() else "cpu")
        dist.init_process_group(backend, timeout=timedelta(seconds=layout.timeout_seconds))
        created = True
    return RankInfo(dist.get_rank(), dist.get_world_size(), local_rank), created


class _Slot:
    """Stands in for a parameter while load_checkpoint reads a file into it."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def copy_(self, value: torch.Tensor) -> None:
        self.value = value


class _Captured:
    """A model/optimizer look-alike for save_checkpoint and load_checkpoint: the one checkpoint
    format, whatever holds the state (FSDP's sharded parameters do not)."""

    def __init__(self, weights: dict[str, Any] | None = None, optimizer_state: dict | None = None):
        self.weights = weights or {}
        self.optimizer_state = optimizer_state

    def named_parameters(self):
        return list(self.weights.items())

    def state_dict(self) -> dict:
        return self.optimizer_state or {}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer_state = state


def _optimizer_by_index(state: dict, names: list[str]) -> dict:
    """torch.distributed.checkpoint's optimiser state (keyed by parameter name) -> torch's own (by index)."""
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [{**group, "params": [index[name] for name in group["params"]]} for group in state["param_groups"]],
    }


def _optimizer_by_name(state: dict, names: list[str]) -> dict:
    return {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]} for group in state["param_groups"]],
    }


class DistributedRecipe(TrainingRecipe):
    """TrainingRecipe as one rank of a process group (see the module docstring)."""

    def __init__(
        self,
        spec: TrainingSpec,
        callbacks: TrainingCallbacks,
        layout: EngineLayout,
        info: RankInfo,
        after_checkpoint: Callable[[DistributedRecipe], None] | None = None,
    ):
        super().__init__(spec, callbacks)
        self.layout, self.info = layout, info
        self.after_checkpoint = after_checkpoint
        self.forward_model: Any = None

    @property
    def sharded(self) -> bool:
        return self.layout.strategy in SHARDED

    # --- model --------------------------------------------------------------------------------

    def distribute_model(self) -> None:
        if self.sharded:
            self._fully_shard()
            self.forward_model = self.model
            return
        from torch.nn.parallel import DistributedDataParallel

        device_ids = (
            [self.device.index if self.device.index is not None else torch.cuda.current_device()] if self.device.type == "cuda" else None
        )
        self.forward_model = DistributedDataParallel(self.model, device_ids=device_ids)

    def _fully_shard(self) -> None:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        kwargs: dict[str, Any] = {}
        if self.precision.dtype is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=self.precision.dtype, reduce_dtype=torch.float32)
        kwargs["offload_policy"] = CPUOffloadPolicy() if self.layout.cpu_offload and self.device.type == "cuda" else OffloadPolicy()
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        layer_classes = set(getattr(base, "_no_split_modules", None) or [])
        for module in list(self.model.modules()):
            if type(module).__name__ in layer_classes:
                fully_shard(module, **kwargs)
        fully_shard(self.model, **kwargs)

    # --- one optimizer step -------------------------------------------------------------------

    def _accumulate(self, group: list[list[int]]) -> float | None:
        rank, world = self.info.rank, self.info.world
        examples = self.train_examples
        full = [collate([examples[i] for i in indices], self.pad_id) for indices in group]
        window = sum(predicted_token_count(batch) for batch in full)
        self.state.tokens_seen += sum(int(batch["attention_mask"].sum()) for batch in full)
        local_sum = 0.0
        for position, indices in enumerate(group):
            share = indices[rank::world]
            if share:
                batch = collate([examples[i] for i in share], self.pad_id)
            else:  # nothing for this rank in this micro-batch: same calls, no loss
                batch = collate([examples[indices[0]]], self.pad_id)
                batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
            last = position == len(group) - 1
            sync = nullcontext() if last or self.sharded else self.forward_model.no_sync()
            with sync:
                # DDP and FSDP average gradients over ranks: weigh by world / global tokens.
                local_sum += micro_step(self.forward_model, to_device(batch, self.device), window / world, self.precision, self.device)  # type: ignore[arg-type]  # a share of the tokens
        total = torch.tensor([local_sum], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(total)
        return float(total.item()) / window

    def _collective_device(self) -> torch.device:
        return self.device if backend_for(self.device.type) == "nccl" else torch.device("cpu")

    # --- checkpoints --------------------------------------------------------------------------

    def _trainable_names(self) -> list[str]:
        return [name for name, p in self.model.named_parameters() if p.requires_grad]

    def _checkpoint_due(self, since_last: float) -> bool:
        """Every rank must agree (a sharded checkpoint is a collective): due when any rank says so."""
        due = torch.tensor([1 if super()._checkpoint_due(since_last) else 0], device=self._collective_device())
        dist.all_reduce(due, op=dist.ReduceOp.MAX)
        return bool(due.item())

    def _checkpoint(self, checkpoint_dir: str, now: float) -> None:
        self.state.train_seconds = self.elapsed_before + now - self.started
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
            weights, optimizer_state = get_state_dict(self.model, self.optimizer, options=options)
            if self.info.rank == 0:
                by_index = _optimizer_by_index(optimizer_state, self._trainable_names())
                model = _Captured(
                    {name: torch.nn.Parameter(cast(torch.Tensor, value), requires_grad=True) for name, value in weights.items()}
                )
                save_checkpoint(checkpoint_dir, model, _Captured(optimizer_state=by_index), self.scheduler, self.state, self.precision)
        elif self.info.rank == 0:
            save_checkpoint(checkpoint_dir, self.model, self.optimizer, self.scheduler, self.state, self.precision)
        dist.barrier()
        if self.info.rank == 0 and hasattr(self.callbacks, "on_checkpoint"):
            self.callbacks.on_checkpoint()
        if self.after_checkpoint is not None:
            self.after_checkpoint(self)

    def resume(self) -> None:
        if not self.spec.checkpoint_dir:
            return
        if not self.sharded:
            super().resume()  # every rank reads the same full file
            return
        names = self._trainable_names()
        model = _Captured({name: _Slot() for name in names})
        optimizer = _Captured()
        restored = load_checkpoint(self.spec.checkpoint_dir, model, optimizer, self.scheduler, self.precision)
        if restored is None:
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        weights = {name: slot.value for name, slot in model.weights.items() if slot.value is not None}
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=weights,
            optim_state_dict=_optimizer_by_name(optimizer.state_dict(), names),
            options=StateDictOptions(full_state_dict=True, strict=False),
        )
        self.state = restored
        self.state.resumed_from_step = self.state.step

    # --- the adapter --------------------------------------------------------------------------

    def write_adapter(self) -> None:
        if not self.sharded:
            if self.info.rank == 0:
                super().write_adapter()
            dist.barrier()
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        weights = get_model_state_dict(self.model, options=options)
        if self.info.rank == 0:
            # PEFT's save_pretrained takes the state dict to write: the gathered full tensors.
            self.model.save_pretrained = partial(type(self.model).save_pretrained, self.model, state_dict=weights)
            try:
                super().write_adapter()
            finally:
                del self.model.save_pretrained
        dist.barrier()


def run_engine(
    spec: TrainingSpec,
    callbacks: TrainingCallbacks,
    layout: EngineLayout | None = None,
    after_checkpoint: Callable[[DistributedRecipe], None] | None = None,
) -> TrainingRun:
    """Train `spec`: in this process for a world of one, else as this process's rank."""
    layout = layout or EngineLayout()
    # A rank of torchrun or Ray (even a world of one, as the GPU smoke runs it) joins the group.
    in_group = dist.is_available() and (dist.is_initialized() or ("RANK" in os.environ and layout.strategy != "single"))
    if not in_group:
        return run_training(spec, callbacks)
    info, created = init_process_group(layout)
    try:
        return DistributedRecipe(spec, callbacks, layout, info, after_checkpoint).run()
    finally:
        if created:
            dist.destroy_process_group()


def gpu_smoke(workdir: str | None = None, steps: int = 8) -> dict[str, Any]:
    """The device check of this module (scripts/gpu-check calls it): the tiny Llama trained by DDP
    and by FSDP2 through the launcher as a torchrun process group over every visible GPU (a world of
    one on a one-GPU machine still runs torchrun, NCCL and bf16), checked against one plain process."""
    import tempfile
    import time
    from pathlib import Path

    from tests.tiny_model import build_tiny_llama  # the repository's locally built tiny model
    from worker.launcher import RunLayout, run_process_group

    if not torch.cuda.is_available():
        return {"status": "skipped", "reason": "no CUDA device"}
    root = Path(workdir or tempfile.mkdtemp(prefix="tailor-dist-smoke-"))
    model_dir = build_tiny_llama(root / "model")
    rows = [(f"What is code {i}?", f"Code {i} means the parcel ships on day {i % 7}.") for i in range(32)]
    params = {"learning_rate": 3e-3, "batch_size": 8, "max_steps": steps, "dropout": 0.0, "precision": "bf16", "epochs": 50}

    class Recorder:
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.ranks: dict = {}

        def on_progress(self, progress) -> None:
            self.losses.append(progress.loss)

        def should_stop(self) -> bool:
            return False

        def on_ranks(self, ranks: dict) -> None:
            self.ranks = dict(ranks)

    def spec(name: str) -> TrainingSpec:
        return TrainingSpec(str(model_dir), "lora", params, rows, rows[:4], str(root / name / "adapter"), seed=0)

    report: dict[str, Any] = {"gpus": torch.cuda.device_count(), "device": torch.cuda.get_device_name(0), "backend": "nccl"}
    one = Recorder()
    started = time.perf_counter()
    reference = run_training(spec("one"), one).result
    report["one_process"] = {"losses": one.losses, "seconds": time.perf_counter() - started, "dtype": reference.environment.get("dtype")}
    world = torch.cuda.device_count()
    for strategy in ("ddp", "fsdp"):
        recorder = Recorder()
        started = time.perf_counter()
        layout = RunLayout(devices_per_machine=world, strategy=strategy, device_kind="cuda")
        try:
            result = run_process_group(spec(strategy), recorder, layout, root / f"work-{strategy}", on_ranks=recorder.on_ranks)
        except Exception as exc:  # noqa: BLE001 - reported, the other strategy still runs
            report[strategy] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        gaps = [abs(a - b) / max(abs(b), 1e-9) for a, b in zip(recorder.losses, one.losses, strict=False)]
        report[strategy] = {
            "status": result.status,
            "world": world,
            "steps": result.steps,
            "seconds": time.perf_counter() - started,
            "losses": recorder.losses,
            "max_relative_loss_gap_vs_one_process": max(gaps) if gaps else None,
            "dtype": result.environment.get("dtype"),
            "peak_memory_bytes": result.peak_memory_bytes,
            "ranks": recorder.ranks,
            "adapter_files": sorted(p.name for p in (root / strategy / "adapter").glob("*")),
        }
    return report
