"""Where one fast clipping call spends its time: the per-layer rules by layer type vs the rest.

The rest is the forward with hooks, the backward to the hooked layers' outputs and the book-keeping. One
process, one model, the same B examples x K copies; the non-private forward + backward of the same work
is timed after it for scale. A timing: run it on an idle machine (the header prints the load average).

    .venv/bin/python bench/clipping_profile.py --config cifar10 --batch 32 --multiplicity 8
"""

import argparse
import collections
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from privimage.models.edm import EDMLoss, EDMPrecond  # noqa: E402
from privimage.models.unet import CONFIGS, UNet  # noqa: E402
from privimage.privacy.clipping import FastClipping  # noqa: E402
from privimage.privacy.clipping.rules import Term  # noqa: E402


def timed_rules(fast: FastClipping, spent: dict[str, float]) -> None:
    """Wrap every planned rule (and the clipped sum it returns) so its seconds add up per layer type."""
    for key, (layers, unsupported) in fast._plans.items():
        def wrap(layer, rule):
            def run(*args):
                t = time.perf_counter()
                term = rule(*args)
                spent[f"{type(layer).__name__} norms"] += time.perf_counter() - t

                def clipped(c, inner=term.clipped):
                    t = time.perf_counter()
                    out = inner(c)
                    spent[f"{type(layer).__name__} clipped sum"] += time.perf_counter() - t
                    return out
                return Term(term.sq, clipped)
            return run
        fast._plans[key] = ([(p, layer, wrap(layer, rule)) for p, layer, rule in layers], unsupported)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cifar10", choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--multiplicity", type=int, default=8)
    p.add_argument("--conv-per-example", default="grouped", choices=["grouped", "unfold"])
    args = p.parse_args()
    torch.manual_seed(0)
    net = EDMPrecond(UNet(CONFIGS[args.config]))
    c = net.config
    loss_fn, g = EDMLoss(multiplicity=args.multiplicity), torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, c.in_channels, c.img_resolution, c.img_resolution, generator=g)
    y = torch.randint(0, c.num_classes, (args.batch,), generator=g)
    batch = (x, y, *loss_fn.draw(x, y, generator=g))
    fast = FastClipping(conv_per_example=args.conv_per_example)
    fast(net, loss_fn, batch, max_grad_norm=1e-3)  # warm-up; builds the plan
    spent: dict[str, float] = collections.defaultdict(float)
    timed_rules(fast, spent)
    t = time.perf_counter()
    fast(net, loss_fn, batch, max_grad_norm=1e-3)
    total = time.perf_counter() - t
    net.zero_grad(set_to_none=True)
    t = time.perf_counter()
    loss_fn(net, *batch).sum().backward()
    plain = time.perf_counter() - t
    rules = sum(spent.values())
    print(f"# {args.config} B={args.batch} K={args.multiplicity} conv={args.conv_per_example} "
          f"threads={torch.get_num_threads()} load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("| part | seconds |\n|---|---|")
    print(f"| fast clipping call, all | {total:.2f} |")
    for name, sec in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"| rules: {name} | {sec:.2f} |")
    print(f"| rest: hooked forward, backward to layer outputs, book-keeping | {total - rules:.2f} |")
    print(f"| non-private forward + backward, same work | {plain:.2f} |")


if __name__ == "__main__":
    main()
