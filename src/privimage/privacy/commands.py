"""CLI of the privacy area: `privimage privacy epsilon` and `privimage privacy calibrate`.

    privimage privacy epsilon --sigma 1.0 --sample-rate 0.01 --steps 5000 --delta 1e-5 --query-sigma 484 --json
    privimage privacy epsilon --sigma 1 --sample-rate 1 --steps 0 --delta 1e-5 --query-sigma 484   # query alone
    privimage privacy calibrate --epsilon 10 --delta 1e-5 --sample-rate 0.3333 --steps 150 --query-sigma 484
"""

import argparse
import json
import math

from privimage.privacy.accountant import ACCOUNTANTS, calibrate_sigma, epsilon_pld, epsilon_rdp
from privimage.privacy.mechanism import Mechanism


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _unit_interval(text: str) -> float:
    """A probability in (0, 1): delta."""
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _sample_rate(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a sampling rate in (0, 1], got {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _steps_or_zero(text: str) -> int:
    """DP-SGD steps for `epsilon`: 0 leaves only the query (its epsilon alone)."""
    return 0 if text == "0" else _positive_int(text)


def _mechanisms(args) -> list[Mechanism]:
    dpsgd = Mechanism("dpsgd", "poisson_gaussian", noise_multiplier=args.sigma, sample_rate=args.sample_rate,
                      steps=args.steps)
    query = [Mechanism("query", "gaussian", noise_multiplier=args.query_sigma)] if args.query_sigma else []
    return [*query, dpsgd]


def _epsilon(args) -> int:
    mechanisms = _mechanisms(args)
    result = {
        "sigma": args.sigma, "sample_rate": args.sample_rate, "steps": args.steps, "delta": args.delta,
        "query_sigma": args.query_sigma,
        "epsilon_pld": epsilon_pld(mechanisms, delta=args.delta),
        "epsilon_rdp": epsilon_rdp(mechanisms, delta=args.delta),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"epsilon (PLD) = {result['epsilon_pld']:.4f}   epsilon (RDP) = {result['epsilon_rdp']:.4f}   "
              f"at delta = {args.delta:g}")
    return 0


def _calibrate(args) -> int:
    sigma, achieved = calibrate_sigma(epsilon=args.epsilon, delta=args.delta, sample_rate=args.sample_rate,
                                      steps=args.steps, query_sigma=args.query_sigma, accountant=args.accountant)
    args.sigma = sigma
    mechanisms = _mechanisms(args)
    result = {
        "epsilon": args.epsilon, "delta": args.delta, "sample_rate": args.sample_rate, "steps": args.steps,
        "query_sigma": args.query_sigma, "accountant": args.accountant, "sigma": sigma,
        "epsilon_pld": achieved if args.accountant == "pld" else epsilon_pld(mechanisms, delta=args.delta),
        "epsilon_rdp": achieved if args.accountant == "rdp" else epsilon_rdp(mechanisms, delta=args.delta),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"sigma = {sigma:.4f}   epsilon (PLD) = {result['epsilon_pld']:.4f}   "
              f"epsilon (RDP) = {result['epsilon_rdp']:.4f}   at delta = {args.delta:g}")
    return 0


def _add_common(parser: argparse.ArgumentParser, *, steps_type) -> None:
    parser.add_argument("--sample-rate", type=_sample_rate, required=True, help="Poisson sampling rate q")
    parser.add_argument("--steps", type=steps_type, required=True, help="DP-SGD steps T")
    parser.add_argument("--delta", type=_unit_interval, required=True, help="delta, below 1/N")
    parser.add_argument("--query-sigma", type=_positive_float, default=None,
                        help="noise multiplier of a one-shot Gaussian query composed with DP-SGD")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def register(subparsers) -> None:
    """Add `privacy epsilon` and `privacy calibrate` to the `privimage` parser."""
    privacy = subparsers.add_parser("privacy", help="privacy accounting (epsilon, noise calibration)")
    sub = privacy.add_subparsers(dest="privacy_command", metavar="COMMAND", required=True)

    eps = sub.add_parser("epsilon", help="epsilon of DP-SGD (and a Gaussian query) at delta")
    eps.add_argument("--sigma", type=_positive_float, required=True, help="DP-SGD noise multiplier")
    _add_common(eps, steps_type=_steps_or_zero)
    eps.set_defaults(func=_epsilon)

    cal = sub.add_parser("calibrate", help="smallest DP-SGD noise multiplier meeting a target epsilon")
    cal.add_argument("--epsilon", type=_positive_float, required=True, help="target epsilon (query included)")
    _add_common(cal, steps_type=_positive_int)
    cal.add_argument("--accountant", choices=ACCOUNTANTS, default="pld", help="accountant used to calibrate")
    cal.set_defaults(func=_calibrate)
