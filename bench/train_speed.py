"""Speed of the generator: images/s and peak memory for non-private training, DP fine-tuning (K=1, K=8)
and sampling, per U-Net config. Each row runs in a fresh process so its peak memory is its own.

    .venv/bin/python bench/train_speed.py                       # cifar10 at 32x32 and demo at 16x16
    .venv/bin/python bench/train_speed.py --configs demo tiny --steps 5 --threads 2 --device cuda

"images/s" counts training examples (each with its K noisy copies for DP); sampling reports network
evaluations per second per image (NFE/s, an 18-step Heun sample costs 35 NFE). Peak memory: CUDA max
allocated on GPU, the process's max RSS on CPU (includes the ~0.3 GB of torch itself).
"""

import argparse
import multiprocessing as mp
import platform
import resource
import time

import torch

from privimage.models.edm import EDMLoss, EDMPrecond
from privimage.models.unet import CONFIGS, UNet, count_parameters
from privimage.privacy.dpsgd import DPSGD
from privimage.privacy.rng import NoiseSource
from privimage.sample import edm_sampler
from privimage.device import resolve_device


def _batch(cfg, n, device, k=1):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((n, cfg.in_channels, cfg.img_resolution, cfg.img_resolution), generator=g, device=device) * 2 - 1
    y = torch.randint(cfg.num_classes, (n,), generator=g, device=device)
    loss_fn = EDMLoss(multiplicity=k)
    return loss_fn, (x, y, *loss_fn.draw(x, y, generator=g)), g


def measure(mode: str, name: str, batch: int, steps: int, device: str, threads: int, queue) -> None:
    """Run `steps` timed steps (after one warm-up) and put (images/s, peak MB) on the queue."""
    torch.set_num_threads(threads)
    device = resolve_device(device)
    cfg = CONFIGS[name]
    net = EDMPrecond(UNet(cfg)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    k = {"train": 1, "dp_k1": 1, "dp_k8": 8, "sample": 1}[mode]
    loss_fn, data, g = _batch(cfg, batch, device, k)
    engine = DPSGD(net, opt, noise_multiplier=1.0, max_grad_norm=1e-3, expected_batch_size=batch, sample_rate=0.5,
                   noise=NoiseSource.fresh())

    def step():
        if mode == "train":
            opt.zero_grad()
            loss_fn(net, *data).mean().backward()
            opt.step()
        elif mode == "sample":
            edm_sampler(net.eval(), data[0], data[1], num_steps=2)  # 3 network evaluations
        else:
            for micro in torch.arange(batch, device=device).split(32):
                engine.accumulate(loss_fn, *(t[micro] for t in data))
            engine.step()

    step()  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    per_s = batch * steps / seconds * (3 if mode == "sample" else 1)
    peak_mb = (torch.cuda.max_memory_allocated() if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    queue.put((per_s, peak_mb, count_parameters(net)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["cifar10", "demo"], choices=sorted(CONFIGS))
    parser.add_argument("--modes", nargs="+", default=["train", "dp_k1", "dp_k8", "sample"])
    parser.add_argument("--batch", type=int, default=64, help="examples per step (DP: logical batch)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  device={device} {gpu}  "
          f"cpu={platform.processor() or platform.machine()} threads={args.threads}  torch={torch.__version__}  "
          f"batch={args.batch} steps={args.steps}")
    print("| config | params | resolution | mode | images/s (sample: NFE/s) | peak MB |")
    print("|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for name in args.configs:
        cfg = CONFIGS[name]
        for mode in args.modes:
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(mode, name, args.batch, args.steps, str(device), args.threads,
                                                     queue))
            proc.start()
            per_s, peak_mb, params = queue.get()
            proc.join()
            print(f"| {name} | {params / 1e6:.2f}M | {cfg.img_resolution}x{cfg.img_resolution}x{cfg.in_channels} "
                  f"| {mode} | {per_s:.1f} | {peak_mb:.0f} |", flush=True)


if __name__ == "__main__":
    main()
