"""CLI commands `run` (the whole pipeline from a YAML config) and `demo` (the same on embedded data)."""

from pathlib import Path

from privimage.config_io import PACKAGED
from privimage.run_config import load_run_config

DEMO_CONFIG = "privimage:demo.yaml"  # ships inside the package so `privimage demo` needs nothing else


def register(subparsers) -> None:
    """Add `run` and `demo` to the `privimage` parser."""
    p = subparsers.add_parser("run", help="run the whole pipeline from a YAML config",
                              description="Semantic query -> selection -> pre-train -> DP fine-tune -> sample -> "
                                          "evaluate -> report, in one run directory (resumable).")
    p.add_argument("config", help="YAML config, or privimage:NAME.yaml for one that ships with privimage "
                                          "(`privimage config list`); sections override the demo defaults")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. privacy.epsilon=5 finetune.epochs=10")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("demo", help="PrivImage vs no pre-training on embedded digits (no download)",
                              description="Sensitive: scikit-learn's handwritten digits. Public: font glyphs "
                                          "rendered from fonts shipped with matplotlib. Runs in minutes on a CPU.")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--epsilon", type=float, default=10.0, help="privacy budget of each method (default 10)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta (default 1e-5)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.set_defaults(func=cmd_demo)


def cmd_run(args) -> int:
    config = load_run_config(args.config, args.overrides)
    out = args.out or str(Path("runs") / Path(args.config.removeprefix(PACKAGED)).stem)
    return finish(config, out, args.device)


def cmd_demo(args) -> int:
    config = load_run_config(DEMO_CONFIG, [f"privacy.epsilon={args.epsilon}", f"privacy.delta={args.delta}"])
    return finish(config, args.out, args.device)


def finish(config, out: str, device: str) -> int:
    from privimage.pipeline import run  # heavy imports only once the arguments are valid

    metrics = run(config, out, device=device)
    print(results_table(metrics))
    print(f"\nrun directory: {out}  (report: {Path(out) / 'report.html'})")
    return 0


def results_table(metrics: dict) -> str:
    """The final table: method, epsilon, selection precision, CA, FID, minutes."""
    rows = [("method", "epsilon", "sel. precision", "CA", "FID", "minutes")]
    precision = metrics.get("selection_precision")
    for name, m in metrics["methods"].items():
        rows.append((
            name,
            f"{m['epsilon']:.3f}",
            f"{precision:.3f}" if name == "privimage" and precision is not None else "-",
            f"{m['ca']:.3f}" if m.get("ca") is not None else "-",
            f"{m['fid']:.2f}" if m.get("fid") is not None else "-",
            f"{m['seconds'] / 60:.1f}" if m.get("seconds") is not None else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    composed = metrics.get("epsilon_composed")
    together = f"; all methods composed: epsilon = {composed:.3f}" if composed is not None and len(rows) > 2 else ""
    return "\n".join(lines) + (f"\n(delta = {metrics['delta']:g}{together}; total wall time "
                               f"{metrics['seconds'] / 60:.1f} min)")

