"""The sections of the HTML report (see report.py); each returns an HTML fragment, "not available" if empty."""

import json
from pathlib import Path

import numpy as np

from privimage.evaluate.figures import bars_svg, class_row, line_svg, png_data_uri
from privimage.evaluate.report import NOT_AVAILABLE, esc, fmt, read_json, table
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.mechanism import Mechanism

NONPRIVATE_FID_NOTE = ('<p class="note warn">NON-PRIVATE FID: computed against the sensitive TRAINING images, it is '
                       'NOT covered by the privacy guarantee (evaluate.allow_nonprivate_fid).</p>')
PER_CLASS = 6  # images per class in each column of the image table
REAL_IMAGES_NOTE = ('<p class="note warn">The real held-out images are shown as they are: they are not covered by '
                    'the DP guarantee (evaluate.show_real_images). Do not share the report if they are private.</p>')


def load_npz(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError):
        return None


def class_names(run: Path, selection: dict | None, methods: list[Path]) -> list[str]:
    """Sensitive class names: from a samples file, else the selection, else the previews."""
    for mdir in methods:
        npz = load_npz(mdir / "samples.npz")
        if npz and "classes" in npz:
            return [str(c) for c in npz["classes"]]
    if selection and isinstance(selection.get("classes"), list):
        return [str(c.get("sensitive_class", "?")) for c in selection["classes"] if isinstance(c, dict)]
    npz = load_npz(run / "previews.npz")
    return [str(c) for c in npz["classes"]] if npz and "classes" in npz else []


def headline(metrics: dict | None, ledgers: dict[str, dict | None]) -> str:
    """(epsilon, delta) of the run: metrics.json's, else the largest ledger epsilon."""
    eps = metrics.get("epsilon") if metrics else None
    delta = metrics.get("delta") if metrics else None
    if eps is None:
        known = [lg for lg in ledgers.values() if lg and lg.get("epsilon_pld") is not None]
        if known:
            eps, delta = max(lg["epsilon_pld"] for lg in known), known[0].get("delta")
    if eps is None:
        return NOT_AVAILABLE
    text = f'(&epsilon;, &delta;) = ({esc(f"{eps:.3f}")}, {esc(f"{delta:.3g}") if delta is not None else "-"})'
    return f'<p class="eps">{text} <span class="note">for each release (method) on its own</span></p>'


def epsilon_alone(entry: dict, delta) -> float | None:
    """The epsilon this mechanism would cost on its own (the per-mechanism breakdown); None if invalid."""
    fields = ("name", "kind", "noise_multiplier", "sample_rate", "steps")
    try:
        return epsilon_pld([Mechanism(**{k: entry[k] for k in fields})], delta=delta)
    except (KeyError, TypeError, ValueError):
        return None


def privacy_section(metrics: dict | None, ledgers: dict[str, dict | None]) -> str:
    """Epsilon per release (each method is its own release of the sensitive data) and all of them composed."""
    rows = []
    for name, lg in ledgers.items():
        if not lg or not isinstance(lg.get("entries"), list):
            rows.append([name, None, None, None, None, "ledger not readable"])
            continue
        parts = [f"{e.get('name')} ({fmt(epsilon_alone(e, lg.get('delta')))} alone)"
                 for e in lg["entries"] if isinstance(e, dict)]
        rows.append([name, lg.get("epsilon_pld"), lg.get("epsilon_rdp"), lg.get("delta"), lg.get("epsilon_budget"),
                     ", ".join(parts)])
    if not rows:
        return NOT_AVAILABLE
    out = table(["release (method)", "epsilon (PLD)", "epsilon (RDP, cross-check)", "delta", "budget",
                 "mechanisms (epsilon alone)"], rows)
    composed = metrics.get("epsilon_composed") if metrics else None
    if composed is not None:
        out += (f'<p class="eps">All {len(rows)} releases together: &epsilon; = {esc(f"{composed:.3f}")} '
                f'<span class="note">(PLD composition of every ledger in this run directory: the guarantee '
                f'when all of them are published)</span></p>')
    elif len(rows) > 1:
        out += '<p class="note">Each release meets its budget on its own; publishing several composes them.</p>'
    return out


def comparison_section(metrics: dict | None) -> str:
    methods = (metrics or {}).get("methods")
    if not isinstance(methods, dict) or not methods:
        return NOT_AVAILABLE
    ms = {k: v for k, v in methods.items() if isinstance(v, dict)}
    nonprivate = any(m.get("fid_nonprivate") for m in ms.values())
    fid_label = "FID, NON-PRIVATE (lower is better)" if nonprivate else "FID (lower is better)"
    charts = [bars_svg({k: m.get("ca") for k, m in ms.items()}, label="CA on real held-out images (higher is better)"),
              bars_svg({k: m.get("fid") for k, m in ms.items()}, label=fid_label)]
    rows = [[k, m.get("epsilon"), m.get("ca"), m.get("fid")] for k, m in ms.items()]  # no times (timings.py)
    note = NONPRIVATE_FID_NOTE if nonprivate else ""
    return (f'<div class="charts">{"".join(charts)}</div>{note}'
            + table(["method", "epsilon", "CA", "FID"], rows))


def selection_section(selection: dict | None) -> str:
    if not selection or not isinstance(selection.get("classes"), list):
        return NOT_AVAILABLE
    info = f"k = {fmt(selection.get('k'))}, sigma_q = {fmt(selection.get('sigma_q'))}, " \
           f"{fmt(selection.get('n_images'))} of {fmt(selection.get('n_public'))} public images"
    if selection.get("query_epsilon") is not None:  # the budget split: the query's own epsilon, DP-SGD the rest
        info += f"; query epsilon {fmt(selection['query_epsilon'])} of the release's " \
                f"{fmt(selection.get('epsilon_budget'))} (DP-SGD calibrated to the rest)"
    rows = [
        [c.get("sensitive_class"),
         ", ".join(f"{n} ({v:.4g})" for n, v in zip(c.get("public_names", []), c.get("noisy_counts", [])))]
        for c in selection["classes"] if isinstance(c, dict)
    ]
    return f"<p>{info}</p>" + table(["sensitive class", "public classes (noisy count)"], rows)


def image_cell(x: np.ndarray | None, y: np.ndarray | None, label: int, name: str) -> str:
    if x is None or y is None or x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(y):
        return "-"
    chosen = x[y == label][:PER_CLASS]
    if len(chosen) == 0:
        return "-"
    uri = png_data_uri(class_row(chosen), scale=max(1, 32 // x.shape[1]))  # about 32 px per image
    return f'<img class="row" alt="{esc(name)}" src="{uri}">'


def images_section(run: Path, methods: list[Path], names: list[str]) -> str:
    """One row per class: real held-out images, the selected public images, then each method's samples."""
    previews = load_npz(run / "previews.npz") or {}
    samples = {m.name: load_npz(m / "samples.npz") for m in methods}
    samples = {k: v for k, v in samples.items() if v and "x" in v and "y" in v}
    if not names or not (previews or samples):
        return NOT_AVAILABLE
    header = ["class", "real held-out", "selected public"] + [f"samples: {k}" for k in samples]
    rows = []
    for label, name in enumerate(names):
        cells = [esc(name), image_cell(previews.get("held_out_x"), previews.get("held_out_y"), label, name),
                 image_cell(previews.get("public_x"), previews.get("public_y"), label, name)]
        cells += [image_cell(s["x"], s["y"], label, name) for s in samples.values()]
        rows.append(cells)
    note = REAL_IMAGES_NOTE if "held_out_x" in previews else ""
    return note + table(header, rows, raw=tuple(range(len(header))))


def log_series(path: Path, key: str) -> list[tuple[float, float]]:
    """(step, value) pairs of one key of a log.jsonl; unreadable lines and missing keys are skipped."""
    points = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return points
    for line in lines:
        try:
            rec = json.loads(line)
            points.append((float(rec["step"]), float(rec[key])))
        except (ValueError, KeyError, TypeError):
            continue
    return points


def training_section(methods: list[Path]) -> str:
    """Per method: epsilon spent and noisy-gradient norm per DP step; the pre-training loss."""
    parts = []
    for mdir in methods:
        log = mdir / "finetune" / "log.jsonl"
        charts = [(log_series(log, "epsilon"), "epsilon spent (ledger)"),
                  (log_series(log, "noisy_grad_norm"), "noisy gradient norm"),
                  (log_series(mdir / "pretrain" / "log.jsonl", "loss"), "pre-training loss (public data)")]
        shown = [line_svg({label: pts}, width=420, height=220) for pts, label in charts if pts]
        parts.append(f"<h3>{esc(mdir.name)}</h3>"
                     + (f'<div class="charts">{"".join(shown)}</div>' if shown else NOT_AVAILABLE))
    note = ('<p class="note">DP fine-tuning logs only noised or public values: epsilon so far and the norm of the '
            'noisy gradient, never per-example losses of the sensitive images.</p>')
    return note + "".join(parts) if parts else NOT_AVAILABLE


def per_class_section(metrics: dict | None) -> str:
    methods = (metrics or {}).get("methods") or {}
    per = {k: m["ca_per_class"] for k, m in methods.items()
           if isinstance(m, dict) and isinstance(m.get("ca_per_class"), dict)}
    if not per:
        return NOT_AVAILABLE
    classes = list(dict.fromkeys(c for v in per.values() for c in v))
    rows = [[c] + [per[k].get(c) for k in per] for c in classes]
    return table(["class"] + [f"CA {k}" for k in per], rows)


def ledgers_section(ledgers: dict[str, dict | None]) -> str:
    parts = []
    for name, ledger in ledgers.items():
        if not ledger or not isinstance(ledger.get("entries"), list):
            parts.append(f"<h3>{esc(name)}</h3>{NOT_AVAILABLE}")
            continue
        entries = [e for e in ledger["entries"] if isinstance(e, dict)]
        cols = ["name", "kind", "noise_multiplier", "sample_rate", "steps"]
        cols += [k for k in dict.fromkeys(k for e in entries for k in e) if k not in cols]  # e.g. planned_steps
        rows = [[e.get(c) for c in cols] + [epsilon_alone(e, ledger.get("delta"))] for e in entries]
        total = table(["epsilon (PLD)", "epsilon (RDP, cross-check)", "delta", "budget", "noise seed"],
                      [[ledger.get("epsilon_pld"), ledger.get("epsilon_rdp"), ledger.get("delta"),
                        ledger.get("epsilon_budget"), ledger.get("noise_seed")]])
        parts.append(f"<h3>{esc(name)}</h3>" + total + table(cols + ["epsilon alone (PLD, same delta)"], rows))
    return "".join(parts) or NOT_AVAILABLE


def metrics_section(metrics: dict | None) -> str:
    if not metrics:
        return NOT_AVAILABLE
    parts = [table(["field", "value"], [[k, v] for k, v in metrics.items() if k != "methods"])]
    methods = metrics.get("methods") or {}
    if isinstance(methods, dict) and methods:
        keys = sorted({k for m in methods.values() if isinstance(m, dict) for k in m} - {"ca_per_class"})
        rows = [[name] + [m.get(k) if isinstance(m, dict) else None for k in keys] for name, m in methods.items()]
        parts.append(table(["method"] + keys, rows))
    return "".join(parts)


def provenance_section(prov: dict | None) -> str:
    if not isinstance(prov, dict):
        return NOT_AVAILABLE
    data = prov.get("data") if isinstance(prov.get("data"), dict) else {}
    top = [[k, v] for k, v in prov.items() if k != "data"]
    rows = [[role, v] for role, v in data.items()]
    note = ('<p class="note">The sensitive file is named by path, size and modification time only: a content hash '
            'would be an un-noised function of the sensitive images. The public data carries its SHA-256.</p>')
    return table(["", "value"], top) + table(["data", "identity"], rows) + note


def audit_section(audit: dict) -> str:
    """`privimage audit`'s result (audit.json): the empirical lower bound next to the claimed epsilon."""
    keys = ("setting", "canaries", "epsilon_claimed", "epsilon_lower_bound", "confidence", "guesses", "correct")
    out = table(["setting", "canaries", "claimed epsilon", "lower bound", "confidence", "guesses", "right"],
                [[audit.get(k) for k in keys]])
    bound, claimed = audit.get("epsilon_lower_bound"), audit.get("epsilon_claimed")
    if isinstance(bound, (int, float)) and isinstance(claimed, (int, float)) and bound > claimed:
        out += '<p class="warn">The lower bound EXCEEDS the claimed epsilon: the release breaks its guarantee.</p>'
    return out + ('<p class="note">A separate DP fine-tuning run of this config with canaries; the bound holds at the '
                  'stated confidence and is far below the claim by design (docs/audit.md).</p>')
