"""Runs the PrivImage+G demo (configs/demo_gan.yaml) and checks it against its targets; prints a table.

Targets (issue "PrivImage+G"): at epsilon 10, CA of the small CNN on the held-out real digits >= 0.70 for
PrivImage+G and >= 0.20 above the GAN without pre-training (none), in the same run, <= 10 minutes wall
on a 2-core CPU. Not a test: timing varies with the machine's load, which is printed next to it.

    .venv/bin/python bench/demo_gan_targets.py [--out runs/demo_gan-bench] [--json] [KEY=VALUE ...]

KEY=VALUE are config overrides, e.g. semantic.classifier=DIR to reuse a semantic classifier trained on
the same public glyphs (then the wall time excludes training it).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from privimage.timings import with_timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo_gan-bench", help="run directory (deleted first)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE")
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    load_before, t0 = os.getloadavg(), time.time()
    cmd = [sys.executable, "-m", "privimage", "run", "privimage:demo_gan.yaml", *args.overrides, "--out", args.out,
           "--no-progress"]
    subprocess.run(cmd, check=True)
    wall, load_after = time.time() - t0, os.getloadavg()
    metrics = with_timings(json.loads((Path(args.out) / "metrics.json").read_text()), args.out)
    ca = {name: m["ca"] for name, m in metrics["methods"].items()}
    eps = max(m["epsilon"] for m in metrics["methods"].values())
    rows = [
        ("wall time (min)", round(wall / 60, 2), "<= 10", wall <= 600),
        ("CA privimage (GAN)", round(ca["privimage"], 3), ">= 0.70", ca["privimage"] >= 0.70),
        ("CA privimage - CA none", round(ca["privimage"] - ca["none"], 3), ">= 0.20", ca["privimage"] - ca["none"] >= 0.20),
        ("epsilon of each method", round(eps, 3), "<= 10", eps <= 10.0),
    ]
    result = {"rows": [{"target": n, "measured": v, "goal": g, "met": ok} for n, v, g, ok in rows],
              "ca": ca, "load_before": load_before, "load_after": load_after, "overrides": args.overrides,
              "step_seconds": {n: m.get("step_seconds", {}) for n, m in metrics["methods"].items()},
              "setup_seconds": metrics.get("setup_seconds"), "epsilon_composed": metrics["epsilon_composed"]}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"\n{'target':<26}{'measured':>10}  {'goal':<9}result")
    for name, value, goal, ok in rows:
        print(f"{name:<26}{value:>10}  {goal:<9}{'met' if ok else 'MISSED'}")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min)")
    print(f"data + semantic classifier: {metrics.get('setup_seconds')}s")
    for name, steps in result["step_seconds"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.0f}s" for k, v in steps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
