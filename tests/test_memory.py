"""privimage keeps freed memory in the process (memory.py): a training step's big tensors are not paged in
again every step (the cost measured in docs/benchmarks.md), and the opt-outs leave glibc's malloc alone.

Each case runs in a fresh interpreter: malloc settings are process-wide and set on import.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")

# A training step whose tensors are over glibc's 32 MiB mmap threshold, ten times: report the minor page
# faults of the last five steps together (steady state; a kept heap still faults now and then while it
# settles, up to ~33k pages in five steps) and whether privimage applied its settings. By default glibc
# unmaps those tensors when they are freed and every step pages them in again (~245k faults per step).
PROBE = """
import json, resource
import privimage, torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 8, 3, padding=1))
x = torch.randn(64, 8, 128, 128)            # 32 MiB in, 64 MiB activations
for step in range(10):
    if step == 5:
        before = faults()
    net(x).square().sum().backward()
print(json.dumps({"kept": privimage.KEEPS_FREED_MEMORY, "faults": faults() - before}))
"""


def probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("PRIVIMAGE_KEEP_FREED_MEMORY", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults():
    kept, plain = probe(), probe(PRIVIMAGE_KEEP_FREED_MEMORY="0")
    assert kept["kept"] and not plain["kept"]
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")  # one activation
    assert plain["faults"] > 10 * pages, plain  # glibc's default: every step pages its big tensors in again
    assert 10 * kept["faults"] < plain["faults"], (kept, plain)  # kept: blocks reused (measured 0-33k vs ~1.2M)


def test_an_explicit_glibc_malloc_tunable_wins():
    assert not probe(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576")["kept"]
