"""Where a command computes, and whether what it builds fits there.

Both checks run before anything is allocated, so a missing GPU or a target too large for the
machine is one clear message instead of a CUDA ``RuntimeError`` or an allocation that takes the
machine down:

* ``resolve_device("cuda:1")``: the device exists (torch sees a GPU with that index);
* ``check_memory(arch, device, copies)``: ``copies`` float32 copies of the target's parameters
  (prediction: the decoded tensors and their post-processed copies; fine-tuning: weights,
  gradients and optimizer state) fit in the memory the device has available now.
"""

from __future__ import annotations

import torch

from logah.errors import LogahError

GIB = 2**30


def resolve_device(spec: str | torch.device) -> torch.device:
    """``spec`` as a ``torch.device`` that this machine has."""
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise LogahError(f"unknown device {str(spec)!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise LogahError(f"device {str(spec)!r}: only cpu and cuda are supported")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise LogahError(f"device {str(spec)!r}: this machine has no GPU that torch can use")
    if device.index is not None and device.index >= count:
        raise LogahError(f"device {str(spec)!r}: this machine has {count} GPU(s), "
                         f"cuda:0..cuda:{count - 1}")
    return device


def available_bytes(device: torch.device) -> int:
    """Memory available for new allocations on ``device`` now."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def check_memory(num_params: int, device: torch.device, copies: float, what: str) -> None:
    """Refuse ``what`` when ``copies`` float32 copies of ``num_params`` parameters exceed the
    memory available on ``device``."""
    needed = num_params * 4 * copies
    have = available_bytes(torch.device(device))
    if needed > have:
        raise LogahError(f"{what} needs about {needed / GIB:.1f} GiB ({num_params / 1e6:,.0f}M "
                         f"parameters) but {device} has {have / GIB:.1f} GiB available")
