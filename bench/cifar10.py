"""The CIFAR-10 benchmark ladder: one rung through `privimage run`, then the results table.

CIFAR-10 is the sensitive data (train split; CA and FID on the held-out test split), Tiny-ImageNet-32 the
public data. Rungs (configs that ship with privimage):

    cpu     privimage:cifar10_cpu.yaml        all four methods on 2 CPU cores at 16 px, CA and FID (from 500
                                              samples / 1000 test images): 80 min measured, docs/results.md
    gpu     privimage:cifar10_gpu.yaml        privimage + none on one H100 / H200 (bench/gpu_check.py sizes it
                                              to one 10-minute call; measured on an H200, docs/results.md)
    paper   privimage:cifar10_baselines.yaml  the paper's scale (days of GPU time; resumable)

Each method runs as its own `privimage run ... methods=[M] --out OUT/M` (its own release and ledger), so
one method can be run or rerun alone, e.g. `methods=[random]`; every stage is cached in OUT/M (pre-training,
fine-tuning, samples, metrics), a killed run resumes, and a finished method is read back, not rerun. To
redo a method with other settings, delete OUT/M (its privacy was spent: it stays in its ledger).
The table lists every method finished in OUT (this call's and earlier ones') and composes their ledgers (the
methods are releases of the same sensitive data); OUT/report.html shows them side by side in one report.

Data: --data DIR (default $PRIVIMAGE_DATA, else ../shared/data beside the checkout) holding
cifar10-jpg.tar.xz and tinyimagenet32-jpg.tar.xz; decoded arrays are cached under $PRIVIMAGE_CACHE.

    nice -n 5 .venv/bin/python bench/cifar10.py --rung cpu --out runs/cifar10_cpu
    .venv/bin/python bench/cifar10.py --rung cpu --out runs/smoke pretrain.steps=4 finetune.steps=2 sample.n=40
    .venv/bin/python bench/cifar10.py --rung cpu --out runs/cifar10_cpu methods=[random] --json
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import yaml

from privimage.errors import UserError
from privimage.evaluate.report import write_report
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.mechanism import Mechanism
from privimage.run_config import load_run_config
from privimage.timings import with_timings

METHODS = ("privimage", "none", "all", "random")  # table order
RUNGS = {"cpu": "cifar10_cpu.yaml", "gpu": "cifar10_gpu.yaml", "paper": "cifar10_baselines.yaml"}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the checkout
FILES = {"sensitive": "cifar10-jpg.tar.xz", "public": "tinyimagenet32-jpg.tar.xz"}
STAGES = ("pretrain", "finetune", "sample", "evaluate")  # step_seconds of each method's metrics.json


def data_overrides(folder: Path) -> list[str]:
    """data.sensitive / data.public as absolute paths, so the run works from any working directory."""
    return [f"data.{key}={(folder / name).resolve()}" for key, name in FILES.items()]


def split_methods(overrides: list[str]) -> tuple[list[str] | None, list[str]]:
    """(methods asked for by a `methods=[...]` override or None, the other overrides)."""
    methods, rest = None, []
    for item in overrides:
        if item.startswith("methods="):
            methods = list(yaml.safe_load(item.partition("=")[2]))
        else:
            rest.append(item)
    return methods, rest


def run_method(config: str, method: str, overrides: list[str], out: Path, device: str, progress: bool) -> float:
    """`privimage run CONFIG methods=[METHOD] ... --out OUT/METHOD`; returns its wall seconds."""
    cmd = [sys.executable, "-m", "privimage", "run", config, f"methods=[{method}]", *overrides,
           "--out", str(out / method), "--device", device, *([] if progress else ["--no-progress"])]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    start = time.time()
    done = subprocess.run(cmd, stdout=sys.stderr)  # the bench's stdout holds only its table / JSON
    if done.returncode:
        sys.exit(f"bench: `privimage run` of method {method} failed (exit {done.returncode}); its message is above")
    return time.time() - start


def method_row(out: Path, method: str) -> dict:
    """One table row from OUT/METHOD/metrics.json (its release's epsilon, CA, FID with counts, minutes)."""
    top = with_timings(json.loads((out / method / "metrics.json").read_text()), out / method)
    m = top["methods"][method]
    steps = m.get("step_seconds", {})
    minutes = {"setup": round(top.get("setup_seconds", 0.0) / 60, 2)}
    minutes |= {s: round(steps[s] / 60, 2) for s in STAGES if s in steps}
    minutes["total"] = round(top["seconds"] / 60, 2)
    return {"method": method, "epsilon": m["epsilon"], "delta": top["delta"], "ca": m.get("ca"),
            "ca_per_classifier": m.get("ca_per_classifier"), "fid": m.get("fid"),
            "fid_n_synthetic": m.get("fid_n_synthetic"), "fid_n_real": m.get("fid_n_real"),
            "fid_real": m.get("fid_real"), "fid_nonprivate": m.get("fid_nonprivate"),
            "selection_precision": top.get("selection_precision") if method == "privimage" else None,
            "minutes": minutes}


def table(rows: list[dict]) -> str:
    """Markdown table: method, epsilon, CA, FID (samples / real images), selection precision, minutes."""
    lines = ["| method | epsilon | CA | FID (samples / real) | sel. precision | minutes: "
             + " / ".join(("setup",) + STAGES + ("total",)) + " |", "|---|---|---|---|---|---|"]
    for r in rows:
        real = "stats file" if r["fid_n_real"] is None else r["fid_n_real"]  # evaluate.fid_stats: count not recorded
        fid = "-" if r["fid"] is None else f"{r['fid']:.2f} ({r['fid_n_synthetic']} / {real})"
        precision = "-" if r["selection_precision"] is None else f"{r['selection_precision']:.3f}"
        ca = "-" if r["ca"] is None else f"{r['ca']:.3f}"
        minutes = " / ".join(str(r["minutes"].get(s, "-")) for s in ("setup",) + STAGES + ("total",))
        lines.append(f"| {r['method']} | {r['epsilon']:.3f} | {ca} | {fid} | {precision} | {minutes} |")
    return "\n".join(lines)


def write_rung_report(out: Path, rows: list[dict], epsilon_composed: float | None) -> Path:
    """OUT/report.html: the methods side by side in one report (each method's own report stays in OUT/METHOD).

    Config, selection, real previews and provenance are the first method's (privimage's when it ran); each
    method brings its ledger, samples, curves and metrics from its own run directory.
    """
    tops = {r["method"]: json.loads((out / r["method"] / "metrics.json").read_text()) for r in rows}
    first = tops[rows[0]["method"]]
    merged = {"epsilon_composed": epsilon_composed, "delta": first["delta"], "ca_split": first.get("ca_split"),
              "selection_precision": tops.get("privimage", {}).get("selection_precision"),
              "methods": {m: top["methods"][m] for m, top in tops.items()}}
    return write_report(out / rows[0]["method"], path=out / "report.html", metrics=merged,
                        methods=[out / r["method"] / r["method"] for r in rows],
                        title=f"privimage CIFAR-10 ladder: {out.resolve().name} ({', '.join(tops)})")


def composed(out: Path, rows: list[dict]) -> float | None:
    """Epsilon of all the methods' releases together (PLD over the entries of every ledger, read only)."""
    if not rows:
        return None
    names = [f.name for f in fields(Mechanism)]
    entries = [Mechanism(**{k: e[k] for k in names}) for r in rows
               for e in json.loads((out / r["method"] / r["method"] / "ledger.json").read_text())["entries"]]
    return epsilon_pld(entries, delta=rows[0]["delta"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--rung", choices=sorted(RUNGS), required=True)
    parser.add_argument("--out", required=True, help="folder of the rung's run directories (OUT/METHOD)")
    parser.add_argument("--data", default=os.environ.get("PRIVIMAGE_DATA") or str(DATA),
                        help="folder with cifar10-jpg.tar.xz and tinyimagenet32-jpg.tar.xz ($PRIVIMAGE_DATA)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (stage headers stay)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. methods=[random]")
    args = parser.parse_args()

    config = f"privimage:{RUNGS[args.rung]}"
    methods, overrides = split_methods(args.overrides)
    overrides = data_overrides(Path(args.data)) + overrides
    asked = [f"methods=[{', '.join(methods)}]"] if methods else []
    try:
        methods = load_run_config(config, overrides + asked).methods  # validates the config before any run
    except UserError as err:
        sys.exit(f"bench: {err}")
    out = Path(args.out)
    start = time.time()
    # SIGTERM (kill, a job scheduler's time limit) stops the running `privimage run` too, through subprocess.run's
    # clean-up, instead of leaving it orphaned; the rerun resumes it like any killed run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated; rerun the same command to resume"))
    for method in methods:
        run_method(config, method, overrides, out, args.device, progress=not args.no_progress)
    done = [m for m in METHODS if (out / m / "metrics.json").is_file()]  # this call's and earlier calls' methods
    rows = [method_row(out, method) for method in done]
    result = {"rung": args.rung, "config": config, "overrides": overrides, "rows": rows,
              "epsilon_composed": composed(out, rows), "wall_minutes": round((time.time() - start) / 60, 2)}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    if rows:
        result["report"] = str(write_rung_report(out, rows, result["epsilon_composed"]))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    if not rows:
        sys.exit(f"bench: no method has finished in {out} (methods asked for: {', '.join(methods)})")
    print(table(rows))
    print(f"\n(delta = {rows[0]['delta']:g}; all methods composed: epsilon = {result['epsilon_composed']:.3f}; "
          f"wall {result['wall_minutes']} min for this call; results in {out / 'results.json'}; "
          f"report {result['report']})")


if __name__ == "__main__":
    main()
