"""Every GPU measurement of this wave in ONE call on a lent GPU (10-minute calls, ~15 device-minutes in all).

    python bench/gpu_check.py --out $OUT --data .data --budget 540 | tee $OUT/log.txt

Stages, each in its own process with its own time limit (one failing leaves the others to run):
 1. env        the card, driver and torch (nvidia-smi, torch.cuda).
 2. dpsgd      bench/dpsgd_speed.py on the cifar10 U-Net, B=256 examples x K=8 copies: bf16, bf16 with the
               conv rule's unfold + bmm instantiation (--conv-per-example unfold, the suspect of the first
               H200 run), bf16 + channels_last and bf16 in micro-batches of 64 (memory; non-private, fast),
               then fp32 (non-private, exact, fast, Opacus) while time allows.
 3. rung       the CIFAR-10 GPU rung (configs/cifar10_gpu.yaml), privimage and none as two concurrent
               `privimage run` processes, each its own release and ledger, CA only (FID afterwards from the
               returned samples: the standard Inception does not travel). pretrain.steps and finetune.epochs
               are set from stage 2's measured speed so the rung ends inside the budget (`size_rung`);
               without that measurement the config's values stand. Alongside: bench/real_ca.py, ResNet-9
               on REAL CIFAR-10 (the CA recipe's check, its 50 epochs), which yields to the rung when time runs out.
 4. results    OUT/gpu_check.json (every table), OUT/runs.tar.gz (each run's JSON, logs and ledger, no
               weights), OUT/samples_METHOD_I.npz (5,000 samples each, for FID): six files, as the lent
               machine returns at most eight. Everything else stays in --work.

Sizing choices are public (they depend on speed measured on random tensors, never on sensitive data).
The script never changes the card's settings.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import cifar10 as ladder  # noqa: E402  (bench/cifar10.py: data paths, result rows, table)

START = time.time()
N_SENSITIVE = 50_000  # CIFAR-10 train
CHUNK = 5_000  # samples per returned .npz (5000 x 32 x 32 x 3 bytes = 15.4 MB < the 16 MB per file)


def left(budget: float) -> float:
    return budget - (time.time() - START)


def say(*parts) -> None:
    print(f"[{time.time() - START:6.0f}s]", *parts, flush=True)


def run(name: str, cmd: list[str], work: Path, timeout: float, env: dict | None = None) -> tuple[int, str]:
    """Run cmd with a time limit; its stdout and stderr go to WORK/logs/NAME.log; returns (rc, stdout)."""
    say(f"{name}: {' '.join(cmd)} (limit {timeout:.0f} s)")
    log = work / "logs" / f"{name}.log"
    t0 = time.time()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1), env=env)
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as err:
        rc = 124
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
    log.write_text(f"$ {' '.join(cmd)}\n# rc {rc}, {time.time() - t0:.1f} s\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    say(f"{name}: rc {rc} in {time.time() - t0:.0f} s" + ("" if rc == 0 else f"; tail: {stderr[-600:]}"))
    return rc, stdout


def env_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info |= {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu",
                            "--format=csv,noheader"], capture_output=True, text=True)
        info["nvidia_smi"] = q.stdout.strip()
    return info


def dpsgd(work: Path, device: str, budget: float, quick: bool) -> dict:
    """bench/dpsgd_speed.py five ways; {variant: its JSON or None}."""
    b, k, steps = (4, 2, 1) if quick else (256, 8, 3)
    variants = {  # bf16 first: the rung is sized from it
        "bf16": (["nonprivate", "fast"], ["--precision", "bf16"]),
        "bf16_unfold": (["nonprivate", "fast"], ["--precision", "bf16", "--conv-per-example", "unfold"]),
        "bf16_channels_last": (["nonprivate", "fast"], ["--precision", "bf16", "--channels-last"]),
        # Memory: 4 micro-batches of 64 examples (512 rows) per step; the 256-example pass peaked at 38 GiB
        # (target <= 16 GiB) on 2026-12-04. Skipped before fp32 when time is short (the last ones are).
        "bf16_micro64": (["nonprivate", "fast"], ["--precision", "bf16", "--micro-batch", "64" if not quick else "2"]),
        "fp32": (["nonprivate", "exact", "fast", "opacus"], []),
    }
    results = {}
    for name, (engines, extra) in variants.items():
        limit = min(150.0, left(budget) - 360)  # the rung needs its minutes
        if limit < 30:
            say(f"dpsgd {name}: skipped, {left(budget):.0f} s left")
            results[name] = None
            continue
        rc, stdout = run(f"dpsgd_{name}", [sys.executable, str(BENCH / "dpsgd_speed.py"), "--config",
                                           "tiny" if quick else "cifar10", "--batch", str(b), "--multiplicity",
                                           str(k), "--steps", str(steps), "--device", device, "--engines", *engines,
                                           *extra, "--json"], work, limit)
        results[name] = json.loads(stdout.strip().splitlines()[-1]) if rc == 0 and stdout.strip() else None
    return results


def rate(result: dict | None, engine: str) -> float | None:
    """Noisy copies per second (examples/s x K) of one engine's row."""
    if not result:
        return None
    row = next((r for r in result["rows"] if r["engine"] == engine), None)
    return row["examples_per_s"] * result["multiplicity"] if row else None


def size_rung(speed: dict, seconds: float, *, pretrain_batch: int, ft_batch: int, k: int) -> tuple[list[str], dict]:
    """Overrides (pretrain.steps, finetune.epochs, finetune.channels_last) that fit `seconds` of GPU work.

    Model: wall ~ FIXED (decoding, the semantic classifier, the query, sampling and CA of both methods)
    + pretraining + two DP fine-tunings run one after the other (the two processes overlap on the GPU,
    which only leaves slack). Pre-training runs at 60 % of the non-private copies/s measured at 2048
    copies per step (512-image batches fill the GPU less); fine-tuning at 90 % of the fast engine's.
    """
    fixed = 215.0  # 190 s measured on 2026-12-04, + 25 s: guidance 1 doubles privimage's and none's sampling
    bf16 = speed.get("bf16")
    cl = speed.get("bf16_channels_last")
    fast, fast_cl = rate(bf16, "fast"), rate(cl, "fast")
    channels_last = bool(fast_cl and (not fast or fast_cl > 1.05 * fast))
    ft_rate = 0.9 * (fast_cl if channels_last else fast or 0.0)
    pre_rate = 0.6 * max(rate(bf16, "nonprivate") or 0.0, rate(cl, "nonprivate") or 0.0)
    plan = {"seconds": round(seconds), "fixed_seconds": fixed, "pretrain_copies_per_s": round(pre_rate),
            "finetune_copies_per_s": round(ft_rate), "finetune_channels_last": channels_last}
    work = 0.85 * (seconds - fixed)
    if not ft_rate or not pre_rate or work < 60:
        plan["sized"] = False
        return [], plan
    pre_s, ft_s = 0.4 * work, 0.3 * work
    steps = int(min(20_000, max(300, pre_s * pre_rate / pretrain_batch)))
    epochs = round(min(30.0, max(1.0, ft_s * ft_rate / (k * N_SENSITIVE))), 2)
    plan |= {"sized": True, "pretrain_steps": steps, "finetune_epochs": epochs,
             "finetune_steps": math.ceil(epochs * N_SENSITIVE / ft_batch)}
    return [f"pretrain.steps={steps}", f"finetune.epochs={epochs}",
            f"finetune.channels_last={str(channels_last).lower()}"], plan


def rung(work: Path, data: Path, device: str, budget: float, overrides: list[str], quick: bool) -> dict:
    """privimage and none as concurrent `privimage run`s (+ the real-data CA check); the rows that finished."""
    runs = work / "runs"
    base = ladder.data_overrides(data) + ["evaluate.metrics=[ca]"] + overrides
    if quick:  # the CPU dry run of this script: tiny sizes, same code path
        base += ["pretrain.steps=4", "pretrain.batch_size=8", "finetune.steps=2", "finetune.batch_size=64",
                 "finetune.micro_batch=32", "finetune.multiplicity=2", "sample.n=40", "sample.steps=2",
                 "semantic.train.epochs=1", "semantic.train.arch={width: 8, stages: 2, blocks: 1, stem_stride: 2}",
                 "evaluate.classifiers=[cnn]", "finetune.precision=fp32"]
    procs = {}
    for method in ("privimage", "none"):
        cmd = [sys.executable, "-m", "privimage", "run", "privimage:cifar10_gpu.yaml", f"methods=[{method}]", *base,
               "--out", str(runs / method), "--device", device, "--no-progress"]
        env = dict(os.environ, PRIVIMAGE_CACHE=str(work / "cache" / method),  # no two decoders on one entry
                   PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")  # two runs share the GPU's memory
        log = open(work / "logs" / f"run_{method}.log", "w")
        say(f"rung {method}: {' '.join(cmd)}")
        procs[method] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time(), log)
    real_cmd = [sys.executable, str(BENCH / "real_ca.py"), "--data", str(data / ladder.FILES["sensitive"]),
                "--classifier", "resnet9", "--device", device, "--json"]
    # The recipe as the rung uses it: 50 epochs (12 took 26 s and gave 0.882 on an H200 on 2026-12-04, so ~110 s).
    real_cmd += ["--n-train", "500", "--n-test", "200", "--epochs", "1"] if quick else []
    real_log = open(work / "logs" / "real_ca.log", "w")
    real = subprocess.Popen(real_cmd, stdout=subprocess.PIPE, stderr=real_log, text=True)
    say(f"real CA check: {' '.join(real_cmd)}")
    seconds = {}
    while procs:
        time.sleep(2)
        for method, (p, t0, log) in list(procs.items()):
            if p.poll() is not None:
                seconds[method] = round(time.time() - t0, 1)
                say(f"rung {method}: rc {p.returncode} in {seconds[method]:.0f} s")
                log.close()
                del procs[method]
        if procs and left(budget) < 40:  # leave time to pack the results
            for method, (p, t0, log) in procs.items():
                say(f"rung {method}: out of time, stopped (its stages so far stay in its run directory)")
                p.kill()
                p.wait()
                log.close()
            break
    real_row = None
    try:
        stdout, _ = real.communicate(timeout=max(1.0, left(budget) - 35))
        real_row = json.loads(stdout) if real.returncode == 0 else None
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        real.kill()
        say("real CA check: out of time, stopped")
    real_log.close()
    done = [m for m in ladder.METHODS if (runs / m / "metrics.json").is_file()]
    rows = [ladder.method_row(runs, m) for m in done]
    result = {"rows": rows, "wall_seconds": seconds, "overrides": base, "real_ca": real_row}
    if rows:
        result["table"] = ladder.table(rows)
        result["epsilon_composed"] = ladder.composed(runs, rows)
    return result


def pack(work: Path, out: Path) -> None:
    """OUT/runs.tar.gz: every small file of the runs (no weights, no samples) and the logs; the samples as
    5k-image chunks OUT/samples_METHOD_I.npz."""
    runs = work / "runs"
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for path in sorted(list(runs.rglob("*")) + list((work / "logs").rglob("*"))):
            if path.is_file() and path.suffix not in (".safetensors", ".npz", ".key") and path.stat().st_size < 4e6:
                tar.add(path, arcname=str(path.relative_to(work)))
    for samples in sorted(runs.glob("*/*/samples.npz")):
        method = samples.parent.name
        with np.load(samples) as z:
            x, y = z["x"], z["y"]
        for i in range(0, len(x), CHUNK):
            np.savez_compressed(out / f"samples_{method}_{i // CHUNK}.npz", x=x[i:i + CHUNK], y=y[i:i + CHUNK])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", required=True, help="folder for the tables and files (on the lent machine: $OUT)")
    p.add_argument("--data", required=True, help="folder with cifar10-jpg.tar.xz and tinyimagenet32-jpg.tar.xz")
    p.add_argument("--work", default="/tmp/privimage-gpu-check", help="working folder (runs, logs, caches)")
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole script")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of every code path (e.g. on CPU)")
    args = p.parse_args()
    out, work, data = Path(args.out), Path(args.work), Path(args.data).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    report = {"env": env_info()}
    say("env:", json.dumps(report["env"]))
    report["dpsgd"] = dpsgd(work, args.device, args.budget, args.quick)
    for name, r in report["dpsgd"].items():
        for row in (r or {}).get("rows", []):
            say(f"dpsgd {name}: {row}")
    overrides, report["rung_plan"] = size_rung(report["dpsgd"], left(args.budget) - 45, pretrain_batch=512,
                                               ft_batch=4096, k=1)  # cifar10_gpu.yaml's multiplicity
    if args.quick:
        overrides = [o for o in overrides if o.startswith("finetune.channels_last")]
    say("rung plan:", json.dumps(report["rung_plan"]))
    report["rung"] = rung(work, data, args.device, args.budget, overrides, args.quick)
    say("rung:\n" + report["rung"].get("table", "(no method finished)"))
    say("real CA check:", json.dumps(report["rung"]["real_ca"]))
    report["seconds"] = round(time.time() - START, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    pack(work, out)
    say("done; files:", sorted(f.name for f in out.iterdir()))


if __name__ == "__main__":
    main()
