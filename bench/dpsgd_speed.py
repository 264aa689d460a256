"""DP-SGD step speed: the same model and the same B x K work per step, four ways, one table.

    .venv/bin/python bench/dpsgd_speed.py --config cifar10 --batch 32 --multiplicity 8 --steps 3
    .venv/bin/python bench/dpsgd_speed.py --config cifar10 --batch 256 --multiplicity 8 --device cuda --json

Engines (all but the first are privimage's DPSGD engine; only phase (a), the clipped sum, differs):
    nonprivate  Adam on the mean EDM loss of the same B examples x K noisy copies: the ceiling
    exact       torch.func vmap per-example gradients (the reference)
    fast        per-layer ghost-norm / instantiation rules with book-keeping (privacy/clipping/fast.py)
    opacus      Opacus 1.6 GradSampleModule hooks (per-row grad_sample, summed over each example's K rows)
Opacus' ghost-clipping mode is not run: it clips each ROW, and our example is K rows (not comparable).

Timing: the engines' steps are interleaved in ONE process (warm-up, then round robin), so the load of a
shared machine hits all alike; ms/step is the median. Peak memory: CUDA max allocated (in process), or on
CPU the max RSS of a fresh process that runs one step of that engine (includes ~0.3 GB of torch).
max_rel_error: largest per-parameter relative error of the clipped sum against a one-example-at-a-time
backward loop (float64 sums), on the first --error-examples examples, dropout off, clipping
norm = their median gradient norm (half are clipped). The U-Net's zero-initialised layers get
N(0, 0.02^2) weights first, so every layer has a gradient. Also printed: the cost of the secure noise
(ChaCha20, hardened Gaussian) for one step of this model, vs torch.randn (MT19937, NOT secure).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as privimage's entry points: before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from privimage.memory import release_freed_memory  # noqa: E402
from privimage.models.edm import EDMLoss, EDMPrecond  # noqa: E402
from privimage.models.unet import CONFIGS, UNet, count_parameters  # noqa: E402
from privimage.privacy.clipping import FastClipping, make_clipping  # noqa: E402
from privimage.privacy.clipping.exact import clip_factors, clipped_sum_by_loop, loop_grads  # noqa: E402
from privimage.privacy.dpsgd import DPSGD  # noqa: E402
from privimage.privacy.rng import NoiseSource  # noqa: E402

ENGINES = ("nonprivate", "exact", "fast", "opacus")


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # autocast dtype; weights, norms, sums and noise stay fp32


def model(config: str, device, channels_last: bool = False) -> EDMPrecond:
    torch.manual_seed(0)
    net = EDMPrecond(UNet(CONFIGS[config])).to(device)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def data(net: EDMPrecond, b: int, k: int, device, channels_last: bool = False):
    g = torch.Generator(device=device).manual_seed(0)
    c = net.config
    x = torch.rand((b, c.in_channels, c.img_resolution, c.img_resolution), generator=g, device=device) * 2 - 1
    if channels_last:  # the images as a channels_last loader would hand them over (the hook-rule trap)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(c.num_classes, (b,), generator=g, device=device)
    loss_fn = EDMLoss(multiplicity=k)
    return loss_fn, (x, y, *loss_fn.draw(x, y, generator=g))


class OpacusClipping:
    """Phase (a) from Opacus 1.6's per-sample hooks: per-row grad_sample, summed per example, clipped."""

    name = "opacus"

    def __init__(self, net: nn.Module):
        from opacus import GradSampleModule  # optional dependency (the bench extra)

        self.gsm = GradSampleModule(net, batch_first=True, loss_reduction="sum")
        self.gsm.remove_hooks()  # added around each call only: they must not slow the other engines down
        self.net = net

    def __call__(self, module, loss_fn, batch, *, max_grad_norm):
        self.gsm.add_hooks(loss_reduction="sum", batch_first=True)
        try:
            losses = loss_fn(_Wrapped(self.gsm, self.net), *batch)  # (B,)
            losses.sum().backward()
        finally:
            self.gsm.remove_hooks()
        b = len(losses)
        per = {}
        for name, p in module.named_parameters():
            if p.requires_grad:
                per[name] = p.grad_sample.reshape(b, -1, *p.shape).sum(1).float()  # rows -> examples
                p.grad_sample, p.grad = None, None
        scale = clip_factors(sum(g.flatten(1).pow(2).sum(1) for g in per.values()), max_grad_norm)
        return {k: torch.einsum("b,b...->...", scale, g) for k, g in per.items()}, losses.detach()


class _Wrapped:
    """The GradSampleModule called like the EDMPrecond it wraps (Opacus does not forward properties)."""

    def __init__(self, gsm, net):
        self.gsm, self.null_class, self.sigma_data = gsm, net.null_class, net.sigma_data

    def __call__(self, *args):
        return self.gsm(*args)


CONV_PER_EXAMPLE = ["grouped"]  # --conv-per-example: how the fast engine instantiates conv weight gradients


def clipping_for(engine: str, net: nn.Module):
    if engine == "fast":
        return FastClipping(conv_per_example=CONV_PER_EXAMPLE[0])
    return OpacusClipping(net) if engine == "opacus" else make_clipping(engine)


def stepper(engine: str, net: nn.Module, loss_fn, batch, micro: int, dtype: torch.dtype | None = None):
    """A function doing one optimisation step of `engine` on the whole batch (micro-batched).

    dtype: autocast dtype (bf16) of the forward and backward passes, None for fp32; the non-private step
    gets the same autocast, so the ratio compares like with like."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-6)
    chunks = torch.arange(len(batch[0]), device=batch[0].device).split(micro)
    if engine == "nonprivate":
        def step():
            opt.zero_grad(set_to_none=True)
            for idx in chunks:
                with torch.autocast(batch[0].device.type, dtype=dtype, enabled=dtype is not None):
                    loss = loss_fn(net, *(t[idx] for t in batch)).sum() / len(batch[0])
                loss.backward()
            opt.step()
        return step
    dp = DPSGD(net, opt, noise_multiplier=1.0, max_grad_norm=1e-3, expected_batch_size=len(batch[0]),
               sample_rate=0.5, noise=NoiseSource.fresh(), autocast_dtype=dtype)
    dp.clipping = clipping_for(engine, net)

    def step():
        for idx in chunks:
            dp.accumulate(loss_fn, *(t[idx] for t in batch))
        dp.step()
    return step


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def max_rel_error(engine: str, net: nn.Module, loss_fn, batch, n: int, dtype: torch.dtype | None = None
                  ) -> float | None:
    """Against the fp32 loop; under bf16 the engine's clipped sum is computed with autocast (its tolerance)."""
    if engine == "nonprivate":
        return None
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    for m in dropouts:  # deterministic, but the model stays in train mode (Opacus' hooks skip eval mode)
        m.eval()
    sub = tuple(t[:n] for t in batch)
    norms = [math.sqrt(sum(float(g.double().pow(2).sum()) for g in loop_grads(net, loss_fn, *(t[i:i + 1] for t in sub))
                           .values())) for i in range(n)]
    c = sorted(norms)[n // 2]
    ref = clipped_sum_by_loop(net, loss_fn, sub, max_grad_norm=c)
    with torch.autocast(sub[0].device.type, dtype=dtype, enabled=dtype is not None):
        sums, _ = clipping_for(engine, net)(net, loss_fn, sub, max_grad_norm=c)
    net.zero_grad(set_to_none=True)
    for m in dropouts:
        m.train()
    total = math.sqrt(sum(float(v.pow(2).sum()) for v in ref.values()))
    return max(float((sums[k].double() - v).norm()) / max(float(v.norm()), 1e-6 * total) for k, v in ref.items())


def peak_mb_of(engine: str, args, device) -> float:
    """Peak memory of one step: CUDA in process; CPU in a fresh process (max RSS)."""
    if device.type == "cuda":
        net = model(args.config, device, args.channels_last)
        loss_fn, batch = data(net, args.batch, args.multiplicity, device, args.channels_last)
        step = stepper(engine, net, loss_fn, batch, args.micro_batch or args.batch, PRECISIONS[args.precision])
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync(device)
        return torch.cuda.max_memory_allocated() / 2**20
    cmd = [sys.executable, __file__, "--config", args.config, "--batch", str(args.batch), "--multiplicity",
           str(args.multiplicity), "--micro-batch", str(args.micro_batch or args.batch), "--memory-of", engine,
           "--precision", args.precision, "--conv-per-example", args.conv_per_example,
           *(["--channels-last"] if args.channels_last else [])]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])


def noise_cost(n_params: int, device, reps: int = 3) -> tuple[float, float]:
    """ms per step of the secure DP noise for n_params values, and of torch.randn (insecure) for scale."""
    src, secure, plain = NoiseSource.fresh(), [], []
    for t in range(reps):
        t0 = time.perf_counter()
        src.gaussian((n_params,), std=1.0, stream="bench/noise", counter=t + 1, device=device)
        sync(device)
        secure.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.randn(n_params, device=device)
        sync(device)
        plain.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(secure), 1e3 * statistics.median(plain)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cifar10", choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=32, help="examples B per step (each with K noisy copies)")
    p.add_argument("--multiplicity", type=int, default=8, help="noisy copies K per example")
    p.add_argument("--steps", type=int, default=3, help="timed steps per engine (after one warm-up)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--micro-batch", type=int, default=0, help="physical micro-batch (0: the whole batch)")
    p.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS),
                   help="bf16: autocast forward/backward (fp32 weights, norms, sums and noise), every engine alike")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and inputs, every engine alike")
    p.add_argument("--error-examples", type=int, default=4, help="examples checked against the loop")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--conv-per-example", default="grouped", choices=["grouped", "unfold"],
                   help="fast engine: conv weight gradients per example by a grouped conv backward or unfold + bmm")
    p.add_argument("--memory-of", choices=ENGINES, help=argparse.SUPPRESS)  # internal: one step, print max RSS
    args = p.parse_args()
    device, dtype = torch.device(args.device), PRECISIONS[args.precision]
    CONV_PER_EXAMPLE[0] = args.conv_per_example
    if args.memory_of:
        net = model(args.config, device, args.channels_last)
        loss_fn, batch = data(net, args.batch, args.multiplicity, device, args.channels_last)
        stepper(args.memory_of, net, loss_fn, batch, args.micro_batch or args.batch, dtype)()
        print(_vm_hwm_mb())
        return
    net = model(args.config, device, args.channels_last)
    loss_fn, batch = data(net, args.batch, args.multiplicity, device, args.channels_last)
    errors = {e: max_rel_error(e, net, loss_fn, batch, args.error_examples, dtype) for e in args.engines}
    steps = {e: stepper(e, net, loss_fn, batch, args.micro_batch or args.batch, dtype) for e in args.engines}
    times = {e: [] for e in args.engines}
    for e in args.engines:
        steps[e]()  # warm-up
    for _ in range(args.steps):
        for e in args.engines:
            sync(device)
            t0 = time.perf_counter()
            steps[e]()
            sync(device)
            times[e].append(time.perf_counter() - t0)
    del steps
    release_freed_memory()  # the kept heap (privimage.memory) would sit beside each peak-measuring process
    peaks = {e: peak_mb_of(e, args, device) for e in args.engines}
    ms = {e: 1e3 * statistics.median(v) for e, v in times.items()}
    base = ms.get("nonprivate")
    rows = [{"engine": e, "ms_per_step": round(ms[e], 1), "examples_per_s": round(args.batch / ms[e] * 1e3, 2),
             "peak_mb": round(peaks[e], 1), "ratio_to_nonprivate": round(ms[e] / base, 3) if base else None,
             "max_rel_error": errors[e]} for e in args.engines]
    secure_ms, randn_ms = noise_cost(count_parameters(net), device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result = {"rows": rows, "device": f"{device.type} {name}", "config": args.config, "batch": args.batch,
              "multiplicity": args.multiplicity, "precision": args.precision, "channels_last": args.channels_last,
              "conv_per_example": args.conv_per_example, "torch": torch.__version__, "params": count_parameters(net), "threads": torch.get_num_threads(),
              "secure_noise_ms_per_step": round(secure_ms, 1), "torch_randn_ms_per_step": round(randn_ms, 1)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {result['device']}  threads={result['threads']}  "
          f"torch={torch.__version__}  {args.config} ({result['params'] / 1e6:.2f}M params)  B={args.batch} "
          f"K={args.multiplicity}  {args.precision}{'  channels_last' if args.channels_last else ''}  "
          f"conv={args.conv_per_example}  steps={args.steps}  load average {' '.join(f'{x:.1f}' for x in _load())}")
    print("| engine | ms/step | examples/s | peak MB | ratio to non-private | max rel. error vs loop |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        err = "-" if r["max_rel_error"] is None else f"{r['max_rel_error']:.1e}"
        ratio = "-" if r["ratio_to_nonprivate"] is None else f"{r['ratio_to_nonprivate']:.2f}"
        print(f"| {r['engine']} | {r['ms_per_step']:.0f} | {r['examples_per_s']:.2f} | {r['peak_mb']:.0f} | {ratio} "
              f"| {err} |")
    print(f"secure noise per step ({result['params']:,} values): {secure_ms:.1f} ms "
          f"(torch.randn, not secure: {randn_ms:.1f} ms)")


def _vm_hwm_mb() -> float:
    """Peak RSS of this process in MB. Not ru_maxrss: Linux carries the parent's over fork + exec."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load() -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in open("/proc/loadavg").read().split()[:3])
    except OSError:
        return ()


if __name__ == "__main__":
    main()
