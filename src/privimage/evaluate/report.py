"""`privimage report RUN_DIR`: one self-contained HTML page describing a run, for humans.

It shows what a reader needs to trust the numbers: the resolved config, the privacy ledger of every
method (total epsilon/delta and each mechanism), which public classes were selected for each sensitive
class, samples per class, loss curves and the metrics. Images are inlined as base64 PNG and charts as
SVG, so the file stands alone. A missing or unreadable piece is shown as "not available", never fatal.
Every piece of text from the run directory is escaped.

Example:
    >>> write_report("runs/demo")  # -> runs/demo/report.html
"""

import datetime
import html
import json
from pathlib import Path

import numpy as np

from privimage.errors import UserError
from privimage.evaluate.figures import class_row, loss_svg, png_data_uri
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.mechanism import Mechanism

METHOD_ORDER = ["privimage", "none", "all", "random"]
NOT_AVAILABLE = '<p class="na">not available</p>'
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; text-align: left; } .na { color: #999; font-style: italic; }
pre { background: #f7f7f7; padding: 0.5em; max-height: 30em; overflow: auto; }
.warn { color: #a00; font-weight: bold; } .chart text { font-size: 11px; } img.row { image-rendering: pixelated; } .eps { font-size: 1.3em; }
"""


def esc(value) -> str:
    return html.escape(str(value))


def fmt(value) -> str:
    """A cell: floats with 4 significant digits, dicts as k: v pairs, None as a dash; escaped."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return esc(f"{value:.4g}")
    if isinstance(value, dict):
        return ", ".join(f"{esc(k)}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return esc(value)


def read_json(path: Path):
    """The parsed file, or None when it is missing or not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def method_dirs(run: Path) -> list[Path]:
    """Per-method subfolders (those with a ledger, samples or checkpoints), known methods first."""
    found = [
        d for d in run.iterdir()
        if d.is_dir() and any((d / f).exists() for f in ("ledger.json", "samples.npz", "pretrain", "finetune"))
    ]
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(found, key=lambda d: (rank.get(d.name, len(rank)), d.name))


def summary_section(metrics: dict | None, ledgers: dict[str, dict | None]) -> str:
    """Epsilon of each method's release, and of all of them composed (they are releases of the same data)."""
    delta = metrics.get("delta") if metrics else None
    per_method = {name: lg["epsilon_pld"] for name, lg in ledgers.items() if lg and lg.get("epsilon_pld") is not None}
    if delta is None and per_method:
        delta = next(lg.get("delta") for lg in ledgers.values() if lg and lg.get("epsilon_pld") is not None)
    composed = metrics.get("epsilon_composed") if metrics else None
    if not per_method and composed is None:
        return "<h2>Privacy</h2>" + NOT_AVAILABLE
    d = esc(f"{delta:.3g}") if isinstance(delta, (int, float)) else "-"
    parts = ["<h2>Privacy</h2>"]
    if composed is not None:
        parts.append(f'<p class="eps">all releases of this run composed: (&epsilon;, &delta;) = '
                     f'({esc(f"{composed:.3f}")}, {d})</p>')
    rows = [[name, eps] for name, eps in per_method.items()]
    parts.append(table(["release (method)", f"epsilon at delta = {d}"], rows))
    methods = (metrics.get("methods") or {}) if metrics else {}
    if any(isinstance(m, dict) and m.get("fid_nonprivate") for m in methods.values()):
        parts.append('<p class="warn">FID was computed against the sensitive TRAINING images: it is NOT covered '
                     'by the privacy guarantee (evaluate.allow_nonprivate_fid).</p>')
    return "".join(parts)


def metrics_section(metrics: dict | None) -> str:
    if not metrics:
        return "<h2>Metrics</h2>" + NOT_AVAILABLE
    top = [[k, v] for k, v in metrics.items() if k != "methods"]
    parts = ["<h2>Metrics</h2>", table(["field", "value"], top)]
    methods = metrics.get("methods") or {}
    if isinstance(methods, dict) and methods:
        keys = sorted({k for m in methods.values() if isinstance(m, dict) for k in m})
        rows = [[name] + [m.get(k) if isinstance(m, dict) else None for k in keys] for name, m in methods.items()]
        parts.append(table(["method"] + keys, rows))
    return "".join(parts)


def ledger_html(ledger: dict | None) -> str:
    if not ledger or not isinstance(ledger.get("entries"), list):
        return "<h4>Privacy ledger</h4>" + NOT_AVAILABLE
    total = table(
        ["epsilon (PLD)", "epsilon (RDP, cross-check)", "delta", "budget", "noise seed"],
        [[ledger.get("epsilon_pld"), ledger.get("epsilon_rdp"), ledger.get("delta"),
          ledger.get("epsilon_budget"), ledger.get("noise_seed")]],
    )
    entries = [e for e in ledger["entries"] if isinstance(e, dict)]
    cols = ["name", "kind", "noise_multiplier", "sample_rate", "steps"]
    cols += [k for k in dict.fromkeys(k for e in entries for k in e) if k not in cols]  # e.g. planned_steps
    rows = [[e.get(c) for c in cols] + [epsilon_alone(e, ledger.get("delta"))] for e in entries]
    return "<h4>Privacy ledger</h4>" + total + table(cols + ["epsilon alone (PLD, same delta)"], rows)


def epsilon_alone(entry: dict, delta) -> float | None:
    """The epsilon this mechanism would cost on its own (the per-mechanism breakdown); None if invalid."""
    fields = ("name", "kind", "noise_multiplier", "sample_rate", "steps")
    try:
        return epsilon_pld([Mechanism(**{k: entry[k] for k in fields})], delta=delta)
    except (KeyError, TypeError, ValueError):
        return None


def selection_section(selection: dict | None) -> str:
    if not selection or not isinstance(selection.get("classes"), list):
        return "<h2>Selected public classes</h2>" + NOT_AVAILABLE
    info = f"k = {fmt(selection.get('k'))}, sigma_q = {fmt(selection.get('sigma_q'))}, " \
           f"{fmt(selection.get('n_images'))} of {fmt(selection.get('n_public'))} public images"
    rows = [
        [c.get("sensitive_class"),
         ", ".join(f"{n} ({v:.4g})" for n, v in zip(c.get("public_names", []), c.get("noisy_counts", [])))]
        for c in selection["classes"] if isinstance(c, dict)
    ]
    return f"<h2>Selected public classes</h2><p>{info}</p>" + table(
        ["sensitive class", "public classes (noisy count)"], rows)


def samples_html(path: Path, class_names: list[str], *, per_class: int = 10) -> str:
    """One row of up to `per_class` samples per class, labelled with the class name."""
    try:
        with np.load(path) as npz:
            x, y = npz["x"], npz["y"]
            names = [str(n) for n in npz["classes"]] if "classes" in npz.files else class_names
    except (OSError, KeyError, ValueError):
        return "<h4>Samples</h4>" + NOT_AVAILABLE
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(y) or len(x) == 0:
        return "<h4>Samples</h4>" + NOT_AVAILABLE
    scale = max(1, 64 // x.shape[1])
    rows = []
    for label in np.unique(y):
        name = names[label] if 0 <= label < len(names) else f"class {label}"
        uri = png_data_uri(class_row(x[y == label][:per_class]), scale=scale)
        rows.append(f'<tr><td>{esc(name)}</td><td><img class="row" alt="{esc(name)}" src="{uri}"></td></tr>')
    return f"<h4>Samples ({len(x)} in samples.npz)</h4><table>{''.join(rows)}</table>"


def loss_curve(log: Path) -> list[tuple[float, float]]:
    """(step, loss) pairs of a log.jsonl; unreadable lines are skipped."""
    points = []
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return points
    for line in lines:
        try:
            rec = json.loads(line)
            points.append((float(rec["step"]), float(rec["loss"])))
        except (ValueError, KeyError, TypeError):
            continue
    return points


def method_section(mdir: Path, class_names: list[str]) -> str:
    parts = [f"<h3>Method: {esc(mdir.name)}</h3>", ledger_html(read_json(mdir / "ledger.json"))]
    parts.append(samples_html(mdir / "samples.npz", class_names))
    for phase in ("pretrain", "finetune"):
        points = loss_curve(mdir / phase / "log.jsonl")
        chart = loss_svg({f"{phase} loss": points}) if points else NOT_AVAILABLE
        parts.append(f"<h4>{phase} loss</h4>{chart}")
    return "".join(parts)


def render_report(run_dir: str | Path) -> str:
    """The report of `run_dir` as an HTML string."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: not a run directory")
    config, metrics, selection = (read_json(run / f) for f in ("config.json", "metrics.json", "selection.json"))
    methods = method_dirs(run)
    ledgers = {m.name: read_json(m / "ledger.json") for m in methods}
    class_names = [c.get("sensitive_class", "?") for c in selection["classes"]] if selection and isinstance(
        selection.get("classes"), list) else []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>privimage run {esc(run.resolve().name)}</h1><p>{esc(str(run.resolve()))}, report written {stamp}</p>",
        summary_section(metrics, ledgers),
        metrics_section(metrics),
        selection_section(selection),
        "<h2>Methods</h2>" + ("".join(method_section(m, class_names) for m in methods) or NOT_AVAILABLE),
        "<h2>Config</h2>" + (f"<pre>{esc(json.dumps(config, indent=2))}</pre>" if config else NOT_AVAILABLE),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>privimage report: '
            f'{esc(run.resolve().name)}</title><style>{STYLE}</style></head><body>{"".join(body)}</body></html>\n')


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html (temp file + rename) and return its path."""
    run = Path(run_dir)
    text = render_report(run)
    path, tmp = run / "report.html", run / "report.html.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
