"""Falsifiers for the ``mutant_worker`` contract (contracts/mutant_worker.yaml): what the worker does before it
forks leaves its jobs the GPU.

On a CPU-only build torch answers every CUDA question without initialising anything, so the first
falsifier watches the questions themselves; the second forks after preloading on a GPU machine and
allocates there, as a job would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from albor.verify import mutant_worker


@pytest.mark.claim("MUTANT_WORKER-001")
def test_preloading_leaves_cuda_to_the_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    for name in ("is_available", "device_count", "init", "get_device_name"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, _n=name, **k: asked.append(_n) or False)
    mutant_worker.preload()
    assert not asked, f"preloading asked torch.cuda {asked}: on a GPU machine no forked job could use the GPU"


@pytest.mark.cuda
@pytest.mark.claim("MUTANT_WORKER-001")
def test_a_job_forked_after_preloading_runs_on_the_gpu() -> None:
    # A fresh interpreter: this test process may have used CUDA already, which no fork of it could undo.
    script = textwrap.dedent(
        """
        import os
        from albor.verify import mutant_worker
        mutant_worker.preload()
        pid = os.fork()
        if pid == 0:
            import torch
            try:
                os._exit(0 if torch.ones(3, device="cuda").sum().item() == 3 else 1)
            except Exception as e:
                print(e, flush=True)
                os._exit(2)
        os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"a job forked after preloading could not use the GPU: {run.stdout}{run.stderr[-1500:]}"
