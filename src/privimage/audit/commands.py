"""CLI of the audit area: `privimage audit CONFIG` -- an empirical lower bound on the run's epsilon.

    privimage audit privimage:demo.yaml --canaries 1000 --setting gradient --json
    privimage audit privimage:tiny.yaml --setting input --out runs/tiny      # also writes runs/tiny/audit.json
"""

import argparse
import json
from pathlib import Path

from privimage.files import write_json_atomic

AUDIT_FILE = "audit.json"  # in a run directory: the report shows it
LEDGER_FILE = "audit_ledger.json"  # every audit run of that directory (each a release of the sensitive data)


def _canaries(text: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {text!r}")
    return int(text)


def register(subparsers) -> None:
    """Add `audit` to the `privimage` parser."""
    p = subparsers.add_parser(
        "audit", help="empirical lower bound on epsilon from one DP fine-tuning run with canaries",
        description="Runs the DP fine-tuning of CONFIG with m canaries (each included with probability 1/2), "
                    "scores them and turns the guesses into an epsilon lower bound at 95%% confidence "
                    "(Steinke et al. 2023; f-DP refinement of Mahloujifar et al. 2024). See docs/audit.md.")
    p.add_argument("config", help="YAML config, or privimage:NAME.yaml (e.g. privimage:demo.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. privacy.epsilon=10 finetune.steps=50")
    p.add_argument("--canaries", type=_canaries, default=1000, help="number of canaries m (default 1000)")
    p.add_argument("--setting", choices=("gradient", "input"), default="gradient",
                   help="gradient: white-box Dirac canaries seen in every noisy update (checks the engine); "
                        "input: canary images scored by the final model's loss (black-box)")
    p.add_argument("--out", help="run directory: the result is also written to OUT/audit.json (the report shows it)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args) -> int:
    from privimage.audit.run import audit  # heavy imports only once the arguments are valid
    from privimage.log import progress_enabled
    from privimage.run_config import load_run_config

    config = load_run_config(args.config, args.overrides)
    ledger_path = None
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        ledger_path = Path(args.out) / LEDGER_FILE
    result = audit(config, setting=args.setting, canaries=args.canaries, device=args.device,
                   progress=progress_enabled(True), ledger_path=ledger_path)
    record = result.to_json()
    if args.out:
        write_json_atomic(Path(args.out) / AUDIT_FILE, record)
    if args.json:
        print(json.dumps(record))
    else:
        print(f"audit ({result.setting}, {result.canaries} canaries): epsilon >= {result.epsilon_lower_bound:.3f} "
              f"at {result.confidence:.0%} confidence; claimed epsilon = {result.epsilon_claimed:.3f} at delta = "
              f"{result.delta:g}  ({result.correct} of {result.guesses} guesses right)")
        if result.epsilon_lower_bound > result.epsilon_claimed:
            print("privimage: warning: the lower bound EXCEEDS the claimed epsilon: the DP-SGD release does not "
                  "meet its guarantee (or this was the 1-in-20 unlucky run: rerun to check)")
    return 0
