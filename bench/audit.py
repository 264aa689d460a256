"""`privimage audit` on a config: correct engine vs a deliberately broken one, as one table (and --json).

Rows (each one DP fine-tuning run of the config with canaries, in this process):
    gradient / correct   white-box Dirac canaries, the engine as shipped
    gradient / broken    the same with the engine's noise scaled down 10x (NoiseSource.gaussian patched
                         HERE, for this row only): its claimed epsilon is a lie, the audit must say so
    input / correct      (with --input) canary images scored by the released model's loss (black-box)

Targets (issue 11): white-box, claimed epsilon 10, on CPU in <= 10 minutes: lower bound >= 2.5; the
broken engine > 10. The load average is printed with the table: timings on a shared machine vary.

    .venv/bin/python bench/audit.py                                   # demo config, 1000 / 10000 canaries
    .venv/bin/python bench/audit.py --config privimage:tiny.yaml --canaries 200 --broken-canaries 1000 --json
"""

import argparse
import contextlib
import json
import os
import time

from privimage.audit.run import audit
from privimage.privacy.rng import NoiseSource
from privimage.run_config import load_run_config


@contextlib.contextmanager
def noise_scaled(factor: float):
    """The engine's Gaussian noise multiplied by `factor` (a broken engine; benchmark rows only)."""
    gaussian = NoiseSource.gaussian
    NoiseSource.gaussian = lambda self, shape, *, std, **kw: gaussian(self, shape, std=std * factor, **kw)
    try:
        yield
    finally:
        NoiseSource.gaussian = gaussian


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="privimage:demo.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--canaries", type=int, default=1000, help="canaries of the correct-engine rows")
    parser.add_argument("--broken-canaries", type=int, default=10000, help="canaries of the broken-engine row")
    parser.add_argument("--input", action="store_true", help="also the black-box input setting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = load_run_config(args.config, args.overrides)
    plan = [("gradient", "correct", args.canaries), ("gradient", "broken (noise / 10)", args.broken_canaries)]
    if args.input:
        plan.append(("input", "correct", args.canaries))
    load_before, rows = os.getloadavg()[0], []
    for setting, engine, m in plan:
        t0, c0 = time.time(), time.process_time()
        with noise_scaled(0.1) if engine.startswith("broken") else contextlib.nullcontext():
            result = audit(config, setting=setting, canaries=m, device=args.device, progress=False)
        rows.append({"setting": setting, "engine": engine, "canaries": m, "claimed": result.epsilon_claimed,
                     "lower_bound": result.epsilon_lower_bound, "one_run": result.bound_one_run,
                     "fdp": result.bound_fdp, "guesses": result.guesses, "correct": result.correct,
                     "minutes": (time.time() - t0) / 60, "cpu_minutes": (time.process_time() - c0) / 60})
    load = {"before": load_before, "after": os.getloadavg()[0], "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"config": args.config, "overrides": args.overrides, "rows": rows, "load_average": load}))
        return
    print(f"| setting | engine | canaries | claimed eps | lower bound (95 %) | Steinke | f-DP | right / guesses | "
          f"minutes | CPU minutes |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['engine']} | {r['canaries']} | {r['claimed']:.2f} | {r['lower_bound']:.2f} | "
              f"{r['one_run']:.2f} | {r['fdp']:.2f} | {r['correct']} / {r['guesses']} | {r['minutes']:.1f} | "
              f"{r['cpu_minutes']:.1f} |")
    print(f"\n{args.config} {' '.join(args.overrides)}; load average {load['before']:.1f} -> {load['after']:.1f} "
          f"on {load['cpus']} CPUs")


if __name__ == "__main__":
    main()
