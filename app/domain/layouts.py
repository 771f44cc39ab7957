"""Where one job runs: how many devices on how many machines, and how the model is spread over them.

Pure (no torch, no database): the training form, the API, the job service and the worker read
the same plan. The memory model is app/domain/estimates.py's, per device:

- DDP: every device holds the whole base model, the adapter and its optimiser state, and the
  activations of its share of the batch (the global batch is split over the devices).
- FSDP2: weights, adapter and optimiser state are sharded (1/N each) and one decoder layer is
  gathered whole at a time; CPU offload (GPUs only) keeps the shards in host memory.
- QLoRA + FSDP: the 4-bit base sharded as above; bitsandbytes' sharding needs CUDA.

The strategy is chosen automatically (DDP when everything fits one device with room for the
activations, FSDP otherwise) with a reason, and can be overridden.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from app.domain.estimates import WorkerClass, estimate_job, model_shape, trainable_parameters
from app.domain.techniques import get_technique

GB = 1024**3
HEADROOM = 0.9  # of a device's memory that a plan may fill
STRATEGY_CHOICES = ("auto", "ddp", "fsdp")
DEVICE_HELP = "1 = one device; all = every device of one machine; KxM = K machines with M devices each (needs a Ray cluster)."
# Share of perfect scaling kept after gradient all-reduce (DDP) or gathers and reduce-scatters (FSDP).
EFFICIENCY = {"single": 1.0, "ddp": 0.9, "fsdp": 0.8, "qlora_fsdp": 0.75}
STRATEGY_NAMES = {"single": "one device", "ddp": "DDP", "fsdp": "FSDP", "qlora_fsdp": "QLoRA + FSDP"}
RAY_HELP = (
    "Multi-machine jobs need a Ray cluster: start one with `ray start --head --port 6379` on one machine and "
    "`ray start --address HEAD:6379` on the others, then set TAILOR_RAY_ADDRESS=HEAD:6379 for Tailor's web app and workers."
)


class LayoutError(ValueError):
    """A device request that cannot run; the message is for people."""


@dataclass(frozen=True)
class DeviceRequest:
    """What the form asked for: machines x devices per machine (None: all devices of the machine)."""

    machines: int = 1
    per_machine: int | None = 1

    @property
    def text(self) -> str:
        if self.machines == 1:
            return "all" if self.per_machine is None else str(self.per_machine)
        return f"{self.machines}x{self.per_machine}"


def parse_devices(text: str | None) -> DeviceRequest:
    """'1', '2' (devices of one machine), 'all', or 'KxM'."""
    value = (text or "1").strip().lower().replace("×", "x").replace(" ", "")
    if value in ("", "1", "one"):
        return DeviceRequest()
    if value == "all":
        return DeviceRequest(per_machine=None)
    match = re.fullmatch(r"(\d{1,3})x(\d{1,2})|(\d{1,2})", value)
    if not match:
        raise LayoutError(f"Devices must be 1, all, a number of devices, or K machines x M devices such as 2x4 (got {text!r}).")
    machines, per_machine = (int(match[1]), int(match[2])) if match[1] else (1, int(match[3]))
    if machines < 1 or per_machine < 1:
        raise LayoutError("Devices need at least one machine with at least one device.")
    return DeviceRequest(machines, per_machine)


@dataclass(frozen=True)
class LayoutPlan:
    machines: int
    devices_per_machine: int
    strategy: str  # single | ddp | fsdp | qlora_fsdp
    reason: str
    device_kind: str  # cpu | cuda
    cpu_offload: bool = False
    per_device_memory_bytes: int | None = None
    device_memory_bytes: int | None = None
    seconds: float | None = None
    fits: bool | None = None
    refusal: str | None = None  # set when the layout cannot run: the job is refused before launch

    @property
    def world(self) -> int:
        return self.machines * self.devices_per_machine

    def with_reason(self, reason: str) -> LayoutPlan:
        return replace(self, reason=reason)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "world": self.world, "strategy_name": STRATEGY_NAMES[self.strategy]}


def _static_bytes(shape, trained: int, quantized_bits: int, device_kind: str) -> tuple[float, float]:
    """(base weights, trained state) in bytes, as estimate_job counts them."""
    total = shape.parameters
    if quantized_bits:
        weights = shape.linear_parameters * quantized_bits / 8 * 1.07 + (total - shape.linear_parameters) * 4
    else:
        weights = total * (4 if device_kind == "cpu" else 2)
    return weights, trained * 16


def _layer_bytes(shape, quantized_bits: int, device_kind: str) -> float:
    per_layer = sum(i * o for i, o in shape.attention_layers + shape.mlp_layers)
    return per_layer * (quantized_bits / 8 if quantized_bits else (4 if device_kind == "cpu" else 2))


def plan_layout(
    config: dict | None,
    technique: str,
    params: dict[str, Any],
    *,
    task: str,
    n_rows: int,
    tokens_per_row: float,
    request: DeviceRequest,
    device_kind: str = "cpu",
    device_memory_bytes: int | None = None,
    devices_on_machine: int = 1,
    strategy: str = "auto",
    cpu_offload: bool = False,
    num_labels: int = 0,
    quantized_bits: int = 0,
    cluster_configured: bool = False,
) -> LayoutPlan:
    """The plan for `request`, with memory per device and time; `refusal` says why it cannot run."""
    if strategy not in STRATEGY_CHOICES:
        raise LayoutError(f"Strategy must be one of {', '.join(STRATEGY_CHOICES)}.")
    machines = request.machines
    per_machine = request.per_machine if request.per_machine is not None else max(1, devices_on_machine)
    base = LayoutPlan(
        machines, per_machine, "single", "One device: no process group.", device_kind, device_memory_bytes=device_memory_bytes
    )
    if machines > 1 and not cluster_configured:
        return replace(base, refusal=RAY_HELP)
    world = machines * per_machine
    family = get_technique(technique).family
    chosen, reason = _choose(world, family, quantized_bits, device_kind, strategy)
    if chosen is None:
        return replace(base, refusal=reason)
    offload = bool(cpu_offload and chosen in ("fsdp", "qlora_fsdp") and device_kind == "cuda")
    if cpu_offload and not offload:
        reason += " CPU offload applies only to FSDP on GPUs, so it is off."
    shape = model_shape(config or {})
    micro = max(1, math.ceil(int(params.get("batch_size", 8)) / world))
    worker = WorkerClass(device_kind, memory_bytes=device_memory_bytes)
    local = estimate_job(
        config or {},
        technique,
        {**params, "batch_size": micro},
        task=task,
        n_rows=n_rows,
        tokens_per_row=tokens_per_row,
        worker=worker,
        num_labels=num_labels,
        quantized_bits=quantized_bits,
    )
    whole = estimate_job(
        config or {},
        technique,
        params,
        task=task,
        n_rows=n_rows,
        tokens_per_row=tokens_per_row,
        worker=worker,
        num_labels=num_labels,
        quantized_bits=quantized_bits,
    )
    if shape is None or local is None or whole is None:
        return replace(base, machines=machines, devices_per_machine=per_machine, strategy=chosen, reason=reason, cpu_offload=offload)
    trained, _ = trainable_parameters(shape, technique, params, num_labels)
    weights, state = _static_bytes(shape, trained, quantized_bits, device_kind)
    per_device = float(local.peak_memory_bytes)
    if chosen in ("fsdp", "qlora_fsdp"):
        kept = 0.0 if offload else (weights + state) / world
        per_device = per_device - weights - state + kept + _layer_bytes(shape, quantized_bits, device_kind)
    single_needs = whole.peak_memory_bytes
    if (
        strategy == "auto"
        and chosen == "ddp"
        and device_memory_bytes
        and single_needs > device_memory_bytes * HEADROOM
        and family == "lora"
    ):
        chosen = "qlora_fsdp" if quantized_bits == 4 and device_kind == "cuda" else "fsdp"
        return plan_layout(
            config,
            technique,
            params,
            task=task,
            n_rows=n_rows,
            tokens_per_row=tokens_per_row,
            request=request,
            device_kind=device_kind,
            device_memory_bytes=device_memory_bytes,
            devices_on_machine=devices_on_machine,
            strategy="fsdp",
            cpu_offload=cpu_offload,
            num_labels=num_labels,
            quantized_bits=quantized_bits,
            cluster_configured=cluster_configured,
        ).with_reason(
            f"The base model, adapter and optimiser need about {single_needs / GB:.1f} GB on one device, more than "
            f"{device_memory_bytes * HEADROOM / GB:.1f} GB of its {device_memory_bytes / GB:.1f} GB: sharded with "
            f"{STRATEGY_NAMES[chosen]} over {world} devices."
        )
    if chosen == "ddp" and strategy == "auto" and device_memory_bytes:
        reason = (
            f"The base model, adapter and optimiser fit one device with room for activations "
            f"(about {per_device / GB:.1f} of {device_memory_bytes / GB:.1f} GB): replicated with DDP on {world} devices."
        )
    # The steps and held-out checks spread over the devices; loading, tokenizing and saving do not.
    seconds = (whole.train_seconds + whole.held_out_seconds) / (world * EFFICIENCY[chosen]) + whole.setup_seconds
    fits = None if device_memory_bytes is None else per_device <= device_memory_bytes * HEADROOM
    refusal = None
    if fits is False:
        refusal = (
            f"This layout needs about {per_device / GB:.1f} GB on each of its {world} devices ({STRATEGY_NAMES[chosen]}), more than "
            f"{device_memory_bytes * HEADROOM / GB:.1f} GB of the {device_memory_bytes / GB:.1f} GB each has. Use more devices, "  # type: ignore[operator]
            "FSDP with CPU offload, QLoRA, or a smaller batch size or maximum length."
        )
    return LayoutPlan(
        machines, per_machine, chosen, reason, device_kind, offload, int(per_device), device_memory_bytes, seconds, fits, refusal
    )


def _choose(world: int, family: str, quantized_bits: int, device_kind: str, strategy: str) -> tuple[str | None, str]:
    """(strategy, reason) before memory is considered; (None, why) when the request cannot run."""
    if world == 1:
        if strategy == "fsdp":
            return "single", "One device: nothing to shard, so it trains on the one device."
        return "single", "One device: no process group."
    if strategy == "fsdp" or (strategy == "auto" and quantized_bits == 4 and device_kind == "cuda"):
        if family != "lora":
            return None, "FSDP sharding is available for LoRA-family techniques; choose DDP or one device for this technique."
        if quantized_bits == 4:
            if device_kind != "cuda":
                return None, "QLoRA + FSDP shards 4-bit weights with bitsandbytes, which needs CUDA GPUs; choose DDP on CPUs."
            return "qlora_fsdp", "A 4-bit base is sharded with QLoRA + FSDP (asked for, or chosen for 4-bit)."
        return "fsdp", "FSDP chosen under advanced settings: weights, adapter and optimiser are sharded over the devices."
    if strategy == "ddp":
        return "ddp", "DDP chosen under advanced settings: every device holds the whole model."
    return "ddp", f"Replicated with DDP on {world} devices (device memory unknown)."
