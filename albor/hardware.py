"""The machine a run is on: device kind, card name, and the card's peak dense bf16 rate for MFU.

MFU is only as true as its denominator, so the peak comes from a table of known cards; on any
other card MFU is left out (and the run says why) rather than measured against another card's peak.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

# Dense (no sparsity) bf16 tensor-core TFLOP/s with fp32 accumulation, by card name pattern; the first
# pattern that matches `torch.cuda.get_device_name()` wins, so the specific ones come first.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"H100 PCIe", 756.5),  # NVIDIA H100 datasheet: 1,513 with sparsity
    (r"H[12]00 NVL", 835.5),  # NVIDIA H100 NVL / H200 NVL datasheets: 1,671 with sparsity
    (r"GH200|H100|H200", 989.4),  # NVIDIA H100 SXM and H200 SXM datasheets: 1,979 with sparsity
    (r"B200", 2250.0),  # NVIDIA HGX B200 datasheet: 4.5 PFLOP/s with sparsity per GPU
    (r"A100", 312.0),  # NVIDIA A100 datasheet: 312 dense (624 with sparsity)
    (r"L40S", 362.05),  # NVIDIA L40S datasheet: 362.05 dense (733 with sparsity)
    (r"\bL4\b", 121.0),  # NVIDIA L4 datasheet: 242 with sparsity
    (r"\bA10\b", 125.0),  # NVIDIA A10 datasheet: 125 dense (250 with sparsity)
    (r"RTX 4090", 165.2),  # NVIDIA Ada Lovelace whitepaper: 165.2 with fp32 accumulate (330.3 with fp16)
    (r"RTX 3090", 71.0),  # NVIDIA Ampere GA102 whitepaper: 71 with fp32 accumulate (142 with sparsity)
]


def device_kind() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def card_name() -> str:
    """The GPU's name, or the CPU's model name."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_tflops(card: str) -> float | None:
    """The card's peak dense bf16 TFLOP/s from the table, or None for a card it does not hold."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, card):
            return tflops
    return None
