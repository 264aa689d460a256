"""Does torch.compile train the U-Net right? Gradients of eager vs compiled, same weights, same draws.

Before anyone ships a `compile` option for pre-training or DP fine-tuning: on torch 2.13.0+cpu (inductor,
2026-12-05) the compiled U-Net's gradients were ZERO for every parameter from the first downsampling
convolution to the end of the encoder, already at the first step, while the loss matched (docs/benchmarks.md);
the aot_eager backend (no inductor) matched eager exactly. Run it on the device you would compile for:

    .venv/bin/python bench/compile_check.py --config tiny --backend inductor
    python bench/compile_check.py --config cifar10 --device cuda --backend inductor --json

Prints, per step, the loss of both and the worst relative gradient difference over the parameter tensors.
"""

import argparse
import copy
import json

import torch

from privimage.models.edm import EDMLoss, EDMPrecond
from privimage.models.unet import CONFIGS, UNet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, eager)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="Adam steps (lr 1e-3), each compared")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    torch.manual_seed(0)
    net = EDMPrecond(UNet(CONFIGS[args.config])).to(args.device)
    with torch.no_grad():  # no zero-initialised layer: every parameter gets a gradient at the first step
        for param in net.parameters():
            if not param.any():
                param.normal_(0, 0.01)
    twin = copy.deepcopy(net)
    compiled = torch.compile(twin, backend=args.backend)
    loss_fn = EDMLoss(sigma_data=net.sigma_data, label_dropout=0.1, multiplicity=1)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (net, twin)]
    g = torch.Generator(device=args.device).manual_seed(0)
    c, r = net.config.in_channels, net.config.img_resolution
    rows = []
    for step in range(args.steps):
        x = torch.rand(args.batch, c, r, r, generator=g, device=args.device) * 2 - 1
        y = torch.randint(0, net.config.num_classes, (args.batch,), generator=g, device=args.device)
        draws = loss_fn.draw(x, y, generator=g)
        losses = []
        for model, opt in zip((net, compiled), opts):
            opt.zero_grad()
            loss = loss_fn(model, x, y, *draws).mean()
            loss.backward()
            losses.append(float(loss))
        diffs = {name: float((a.grad - b.grad).norm() / (a.grad.norm() + 1e-12))
                 for (name, a), b in zip(net.named_parameters(), twin.parameters())}
        worst = max(diffs, key=diffs.get)
        rows.append({"step": step + 1, "loss_eager": losses[0], "loss_compiled": losses[1],
                     "worst_rel_grad_diff": diffs[worst], "worst_param": worst,
                     "params_off_by_1pct": sum(d > 0.01 for d in diffs.values()), "params": len(diffs)})
        for opt in opts:
            opt.step()
    result = {"config": args.config, "backend": args.backend, "device": args.device, "torch": torch.__version__,
              "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"torch {torch.__version__}, {args.config} U-Net, backend {args.backend}, {args.device}")
    print("| step | loss eager | loss compiled | worst rel. grad diff | parameter | tensors off by > 1 % |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['step']} | {row['loss_eager']:.6f} | {row['loss_compiled']:.6f} | "
              f"{row['worst_rel_grad_diff']:.3g} | {row['worst_param']} | {row['params_off_by_1pct']} of "
              f"{row['params']} |")


if __name__ == "__main__":
    main()
