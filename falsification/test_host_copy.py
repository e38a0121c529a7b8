"""Falsifiers for the ``host_copy`` contract (contracts/host_copy.yaml): host reads see finished values.

The stale-read falsifier needs a GPU: on the CPU every copy is synchronous, so the bug cannot occur
there and its fault has nothing to break.
"""

from __future__ import annotations

import pytest
import torch

from albor.kernels.host_copy import read_scalar


@pytest.mark.cuda
@pytest.mark.claim("HOST_COPY-001")
def test_read_waits_for_pending_kernels(device: torch.device) -> None:
    x = torch.arange(1, 1025, device=device, dtype=torch.float32)
    for i in range(1, 6):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of queued work ahead of the value on the same stream
        value = (x * i).sum()
        assert read_scalar(value) == float(i * 1024 * 1025 // 2), f"read {i} saw a stale value"


@pytest.mark.claim("HOST_COPY-002")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_read_returns_the_value(device: torch.device, dtype: torch.dtype) -> None:
    t = torch.tensor([[3]], device=device, dtype=dtype)
    assert read_scalar(t) == 3.0
    with pytest.raises(ValueError, match="one-element"):
        read_scalar(torch.ones(2, device=device))
