"""The technique catalogue: one entry per PEFT technique, read by the forms, the API's
validation and docs, and the worker (which maps each key to a builder). No torch here.

Adding a technique: one `Technique(...)` entry below plus its builder in
`worker/training/peft_factory.py` under the same key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    name: str
    label: str
    kind: str  # "int" | "float" | "choice" | "str"
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    advanced: bool = False

    def coerce(self, raw: Any) -> Any:
        """Convert and bound-check one value; raises ValueError with a plain message."""
        if raw is None or raw == "":
            return self.default
        try:
            if self.kind == "int":
                value: Any = int(float(raw)) if not isinstance(raw, bool) else None
                if value is None or float(raw) != value:
                    raise ValueError
            elif self.kind == "float":
                value = float(raw)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError
            elif self.kind == "choice":
                value = str(raw)
                if value not in self.choices:
                    raise ValueError
            else:
                value = str(raw)
        except (TypeError, ValueError):
            expected = {"int": "a whole number", "float": "a number", "choice": "one of " + ", ".join(self.choices)}.get(self.kind, "text")
            raise ValueError(f"{self.label} must be {expected}.") from None
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.label} must be at least {self.minimum:g} (got {value:g}).")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.label} must be at most {self.maximum:g} (got {value:g}).")
        return value


@dataclass(frozen=True)
class Technique:
    key: str
    name: str
    summary: str
    description: str
    task_kinds: tuple[str, ...]
    params: tuple[Param, ...]
    typical_adapter_size: str
    memory_needs: str
    requires_cuda: bool = False

    def param(self, name: str) -> Param:
        return next(p for p in self.all_params if p.name == name)

    @property
    def all_params(self) -> tuple[Param, ...]:
        return TRAINING_PARAMS + self.params

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.all_params}


class ParameterError(ValueError):
    """One or more parameters are out of bounds; `errors` maps parameter name to message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


# Parameters every technique shares: how long and how hard to train.
TRAINING_PARAMS: tuple[Param, ...] = (
    Param("epochs", "Epochs", "int", 2, "How many times training goes over your data. More epochs fit the data more closely but can memorise it.", 1, 50),
    Param("learning_rate", "Learning rate", "float", 2e-4, "How big each update step is. Too high makes training unstable; too low learns slowly.", 1e-7, 1.0),
    Param("batch_size", "Batch size", "int", 8, "Examples per step. Larger batches are smoother but need more memory.", 1, 512),
    Param("gradient_accumulation_steps", "Gradient accumulation", "int", 1, "Add up this many batches before each update: a larger effective batch without more memory.", 1, 256, advanced=True),
    Param("max_length", "Maximum length (tokens)", "int", 256, "Longer examples are cut to this many tokens.", 16, 32768),
    Param("warmup_ratio", "Warm-up share", "float", 0.05, "Share of the steps over which the learning rate ramps up from zero.", 0.0, 0.5, advanced=True),
    Param("validation_fraction", "Held-out share", "float", 0.1, "Share of the rows kept aside to measure the result (at least one row).", 0.0, 0.5),
    Param("max_steps", "Step limit", "int", 0, "Stop after this many update steps (0 = no limit).", 0, 1_000_000, advanced=True),
)

CATALOGUE: dict[str, Technique] = {
    technique.key: technique
    for technique in (
        Technique(
            key="lora",
            name="LoRA",
            summary="Low-rank adapters: the standard choice for teaching a model your tone and answers.",
            description=(
                "LoRA freezes the base model and learns two small matrices beside each chosen layer. "
                "It changes how the model writes and answers without touching its original weights, "
                "trains fast, and the result is a small file you can switch on and off. "
                "Pick it first unless you have a reason not to."
            ),
            task_kinds=("instruction",),
            params=(
                Param("r", "Rank", "int", 8, "Capacity of the adapter. 8–16 suits most tasks; higher learns more but is larger.", 1, 512),
                Param("alpha", "Alpha", "int", 16, "Scales the adapter's effect; usually twice the rank.", 1, 2048),
                Param("dropout", "Dropout", "float", 0.05, "Randomly drops part of the adapter while training, against memorising.", 0.0, 0.9, advanced=True),
                Param("target_modules", "Layers to adapt", "choice", "all-linear",
                      "Which layers get an adapter: all linear layers (best quality) or only the attention projections (smaller).",
                      choices=("all-linear", "attention"), advanced=True),
            ),
            typical_adapter_size="1–50 MB (0.1–1% of the base model)",
            memory_needs="The base model in full precision plus a little for the adapter and optimiser.",
        ),
    )
}


def get_technique(key: str) -> Technique:
    try:
        return CATALOGUE[key]
    except KeyError:
        raise ParameterError({"technique": f"Unknown technique {key!r}. Choose one of: {', '.join(CATALOGUE)}."}) from None


def validate_params(technique: Technique, raw: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and bound-check every parameter; unknown names are refused."""
    known = {p.name for p in technique.all_params}
    errors = {name: f"{name!r} is not a parameter of {technique.name}." for name in raw if name not in known}
    clean: dict[str, Any] = {}
    for param in technique.all_params:
        try:
            clean[param.name] = param.coerce(raw.get(param.name))
        except ValueError as exc:
            errors[param.name] = str(exc)
    if errors:
        raise ParameterError(errors)
    return clean
