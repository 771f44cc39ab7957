"""Mixed precision: which dtype the base model loads in, autocast and the fp16 loss scaler."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from worker.training.loading import training_dtype


@dataclass
class Precision:
    """Autocast dtype (None = plain fp32) and the fp16 loss scaler."""

    dtype: torch.dtype | None = None
    scaler: Any = None

    def autocast(self, device):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.dtype)


FP32 = Precision()


def precision_for(params: dict[str, Any], device, *, fp32_weights: bool = False) -> tuple[torch.dtype, Precision]:
    """(dtype to load the base model in, autocast settings).

    `fp32_weights` keeps fp32 master weights under autocast (techniques that train every weight).
    """
    dtype = training_dtype(str(params.get("precision", "auto")), device)
    if dtype == torch.float32:
        return torch.float32, FP32
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    load_dtype = torch.float32 if fp32_weights else dtype
    return load_dtype, Precision(dtype=dtype, scaler=scaler)
