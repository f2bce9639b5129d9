"""Which float type a run computes in, decided at run time and recorded in the run's manifest.

bf16 autocast helps where the hardware has native bf16 matrix units (CUDA GPUs; Intel CPUs with
AMX), and is many times *slower* where it is emulated (AVX2-only CPUs such as AMD EPYC here). So
``train.dtype: auto`` picks bf16 only on CUDA or on a CPU that reports ``amx_bf16``; float32 stays
the reference that tests compare against.
"""
from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for every benchmark figure and manifest."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX bf16 tiles (Intel Sapphire Rapids and later)."""
    return "amx_bf16" in cpu_flags()


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype
    device_type: str
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def autocast(self):
        """Autocast context for the forward pass (a no-op for float32)."""
        if self.dtype in (torch.float32, torch.float64):
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def to_dict(self) -> dict:
        return {"dtype": self.name, "device_type": self.device_type, "reason": self.reason, "cpu": cpu_name()}


def resolve_precision(setting: str, device: str | torch.device) -> Precision:
    """``auto`` | ``float32`` | ``bfloat16`` on ``device`` -> the :class:`Precision` to use, with the reason."""
    device_type = torch.device(device).type
    if setting == "float32":
        return Precision(torch.float32, device_type, "train.dtype=float32")
    if setting == "bfloat16":
        return Precision(torch.bfloat16, device_type, "train.dtype=bfloat16")
    if setting == "float64":  # a numerical reference (model and batch in double), never a speed setting
        return Precision(torch.float64, device_type, "train.dtype=float64")
    if setting != "auto":
        raise ValueError(f"train.dtype must be auto, float32, bfloat16 or float64, got {setting!r}")
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, device_type, "auto: CUDA device with bf16")
        return Precision(torch.float32, device_type, "auto: CUDA device without bf16")
    if device_type == "cpu" and cpu_has_native_bf16():
        return Precision(torch.bfloat16, device_type, f"auto: CPU with AMX bf16 ({cpu_name()})")
    return Precision(torch.float32, device_type, f"auto: CPU without native bf16 ({cpu_name()}): fp32")
