"""Keep freed memory in the process: glibc's malloc otherwise hands large blocks back to the kernel on
every free, and every step pays again to get fresh zeroed pages.

Why: a tensor of 32 MiB or more is mmap-ed by glibc and unmapped when freed; smaller blocks at the top
of the heap are trimmed once more than a (growing) threshold is free. Each DP-SGD step with the fast
clipping keeps every hooked layer's output gradient alive until the clip factors are known, so its peak
is above what the previous step left mapped, and the step page-faults its memory in again: measured
on 2 cores, cifar10 U-Net, B = 16 x K = 8, ~660k minor page faults and 11-12 s per clipping call
against 3.0 s with the memory kept (the non-private step of the same work: 2.6 s, no faults once warm;
docs/benchmarks.md). So, as `OMP_WAIT_POLICY`, privimage sets it when imported:

  * `mallopt(M_MMAP_MAX, 0)`: large blocks come from the heap, where a freed block is reused;
  * `mallopt(M_TRIM_THRESHOLD, -1)`: the heap's free top is never given back.

The cost: the process keeps its peak heap until it exits (memory is reused, not leaked). Opt out with
PRIVIMAGE_KEEP_FREED_MEMORY=0, or set glibc's own GLIBC_TUNABLES=glibc.malloc.* (an explicit malloc
tunable wins: privimage then leaves malloc alone). Nothing happens where libc is not glibc.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
ENV = "PRIVIMAGE_KEEP_FREED_MEMORY"


def _glibc():
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):  # glibc only (musl has neither)
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    """Apply the two malloc settings unless opted out; True when they are in force."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))


def release_freed_memory() -> None:
    """Give the heap's free memory back to the kernel now (malloc_trim), e.g. before another process needs
    it: with `keep_freed_memory` in force nothing else does. A no-op where libc is not glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
