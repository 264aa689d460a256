"""`privimage report RUN_DIR`: one self-contained HTML page describing a run, for humans.

It shows what a reader needs to trust the numbers: epsilon per release and composed, the privacy ledger
of every method, which public classes were selected, samples next to real held-out and selected public
images, the DP training curves (epsilon and noisy gradient norm per step), CA / FID side by side and per
class, provenance (versions, device, data) and the resolved config, with a table of contents. Images
are inlined as base64 PNG and charts as SVG, so the file stands alone. A missing or unreadable piece is
shown as "not available", never fatal. Every piece of text from the run directory is escaped.
The sections live in report_sections.py; this file holds the page and the small HTML helpers.

Example:
    >>> write_report("runs/demo")  # -> runs/demo/report.html
"""

import datetime
import html
import json
from pathlib import Path

from privimage.errors import UserError

METHOD_ORDER = ["privimage", "none", "all", "random"]
NOT_AVAILABLE = '<p class="na">not available</p>'
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; text-align: left; } .na { color: #999; font-style: italic; }
pre { background: #f7f7f7; padding: 0.5em; max-height: 30em; overflow: auto; }
.chart text { font-size: 11px; } img.row { image-rendering: pixelated; } .eps { font-size: 1.3em; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } .note { color: #555; font-size: 0.9em; }
nav ol { columns: 2; } .warn { color: #8a4b00; }
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


def table(header: list[str], rows: list[list], *, raw: tuple[int, ...] = ()) -> str:
    """An HTML table; cells in the `raw` columns are trusted HTML (already escaped), the rest are fmt()-ed."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if i in raw else fmt(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def method_dirs(run: Path) -> list[Path]:
    """Per-method subfolders (those with a ledger, samples or checkpoints), known methods first."""
    found = [
        d for d in run.iterdir()
        if d.is_dir() and any((d / f).exists() for f in ("ledger.json", "samples.npz", "pretrain", "finetune"))
    ]
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(found, key=lambda d: (rank.get(d.name, len(rank)), d.name))


def render_report(run_dir: str | Path, *, methods: list[Path] | None = None, metrics: dict | None = None,
                  title: str | None = None) -> str:
    """The report of `run_dir` as an HTML string.

    A report over runs made separately (bench/cifar10.py runs each method in its own run directory, so
    each has its own ledger) passes `methods` (method folders, each with its ledger, samples and logs)
    and their merged `metrics`; config, selection, previews and provenance still come from `run_dir`.
    """
    from privimage.evaluate import report_sections as sections  # they use the helpers above

    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: not a run directory")
    config, own_metrics, selection = (read_json(run / f) for f in ("config.json", "metrics.json", "selection.json"))
    metrics = own_metrics if metrics is None else metrics
    methods = method_dirs(run) if methods is None else methods
    ledgers = {m.name: read_json(m / "ledger.json") for m in methods}
    class_names = sections.class_names(run, selection, methods)
    parts = [  # (anchor, title, html): one entry of the table of contents each
        ("privacy", "Privacy: epsilon per release", sections.privacy_section(metrics, ledgers)),
        ("comparison", "Methods compared", sections.comparison_section(metrics)),
        ("selection", "Selected public classes", sections.selection_section(selection)),
        ("images", "Samples, real and public images", sections.images_section(run, methods, class_names)),
        ("training", "Training curves", sections.training_section(methods)),
        ("per-class", "CA per class", sections.per_class_section(metrics)),
        ("ledgers", "Privacy ledgers", sections.ledgers_section(ledgers)),
        ("metrics", "All metrics", sections.metrics_section(metrics)),
        ("provenance", "Provenance", sections.provenance_section(read_json(run / "provenance.json"))),
        ("config", "Config", f"<pre>{esc(json.dumps(config, indent=2))}</pre>" if config else NOT_AVAILABLE),
    ]
    audit = read_json(run / "audit.json")  # written by `privimage audit --out RUN`
    if isinstance(audit, dict):
        parts.insert(1, ("audit", "Privacy audit: empirical lower bound", sections.audit_section(audit)))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f'<li><a href="#{anchor}">{esc(title)}</a></li>' for anchor, title, _ in parts)
    generator = (config or {}).get("generator", "diffusion")  # the generator family (generators.py)
    title = title or f"privimage run {run.resolve().name}"
    body = [f"<h1>{esc(title)}</h1><p>{esc(str(run.resolve()))}, report written {stamp}; "
            f"generator family: {esc(generator)} (PrivImage+{esc(generator[:1].upper())})</p>",
            sections.headline(metrics, ledgers), f"<nav><h2>Contents</h2><ol>{toc}</ol></nav>"]
    body += [f'<section id="{anchor}"><h2>{esc(title)}</h2>{content}</section>' for anchor, title, content in parts]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<style>{STYLE}</style></head><body>{"".join(body)}</body></html>\n')


def write_report(run_dir: str | Path, *, path: str | Path | None = None, **kwargs) -> Path:
    """Write RUN_DIR/report.html, or `path` (temp file + rename), and return its path; kwargs: render_report's."""
    run = Path(run_dir)
    text = render_report(run, **kwargs)
    path = run / "report.html" if path is None else Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
