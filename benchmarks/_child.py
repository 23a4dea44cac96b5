"""Helpers of the benchmarks that measure every configuration in a fresh process, so that its peak memory is its own.

A script calls :func:`run_in_child` with its own path and a JSON-able configuration; the child (the same script with
``--child CONFIG``) prints one JSON line with its measurements.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys


def run_in_child(script: str, config: dict) -> dict | str:
    """Run ``python script --child CONFIG``; its last output line as a dict, or the last line of its error as str."""
    res = subprocess.run([sys.executable, script, "--child", json.dumps(config)], capture_output=True, text=True)
    if res.returncode:
        lines = res.stderr.strip().splitlines() or [f"exit status {res.returncode}"]
        return lines[-1][:80]
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine_line(device: str, **extra: object) -> str:
    """One line naming the machine, torch, the GPU (on CUDA) and the run's settings, for the top of a table."""
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    settings = "".join(f", {k.replace('_', ' ')} {v}" for k, v in extra.items())
    return (f"machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}{gpu}, "
            f"device {device}{settings}\n")
