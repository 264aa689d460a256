"""The one place that turns a user's device choice into a torch.device, checked before any work starts.

Why checked here: a device that does not exist (`cuda:7`, `gpu`, CUDA on a CPU-only machine) must be
refused with one line before privacy is spent or any file is written, not as a traceback mid-run.
"""

import torch

from privimage.errors import UserError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None) -> cuda when present, else cpu; anything else must name a usable device.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"device {device!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r}: CUDA is not available on this machine (use auto or cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise UserError(f"device {device!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return dev
