"""Wall-clock timings of a run, kept in RUN/timings.json, apart from the released files.

Why apart: DP fine-tuning takes time in proportion to its realised Poisson batch sizes, and those are an
un-noised statistic of the sensitive data (with one more person the expected sum grows by q per step).
The guarantee covers the noisy model, the samples and the metrics, not the wall clock, so no released
file (metrics.json, report.html, the fine-tune's log.jsonl) carries a time that includes DP fine-tuning.
timings.json is the operator's: benchmarks and the CLI's table read it; do not publish it.

    {"seconds", "setup_seconds", "methods": {method: {"seconds", "step_seconds": {stage: s}}}}

Example:
    >>> released, timings = split_timings({"delta": 1e-5, "seconds": 9.0, "methods": {"none": {"ca": 0.5,
    ...     "seconds": 8.0, "step_seconds": {"finetune": 7.0}}}})
    >>> released
    {'delta': 1e-05, 'methods': {'none': {'ca': 0.5}}}
"""

import copy
import json
from pathlib import Path

FILE = "timings.json"
TOP_KEYS = ("seconds", "setup_seconds")  # keys of metrics.json that are times
METHOD_KEYS = ("seconds", "step_seconds")  # keys of each method's entry that are times


def split_timings(metrics: dict) -> tuple[dict, dict]:
    """(metrics without any time, the times) of a run's metrics."""
    released, timings = copy.deepcopy(metrics), {}
    for key in TOP_KEYS:
        if key in released:
            timings[key] = released.pop(key)
    for name, method in released.get("methods", {}).items():
        times = {key: method.pop(key) for key in METHOD_KEYS if key in method}
        if times:
            timings.setdefault("methods", {})[name] = times
    return released, timings


def with_timings(metrics: dict, out_dir) -> dict:
    """metrics with RUN/timings.json merged back (for the operator's table); unchanged without the file."""
    path = Path(out_dir) / FILE
    if not path.is_file():
        return metrics
    try:
        timings = json.loads(path.read_text())
    except (OSError, ValueError):
        return metrics  # timings are a convenience: a damaged file only loses the minutes column
    merged = copy.deepcopy(metrics)
    merged.update({k: timings[k] for k in TOP_KEYS if k in timings})
    for name, times in timings.get("methods", {}).items():
        if name in merged.get("methods", {}):
            merged["methods"][name].update(times)
    return merged
