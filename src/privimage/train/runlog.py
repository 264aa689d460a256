"""The per-run training log (log.jsonl, one JSON object per logged step)."""

import json
import time
from pathlib import Path


class RunLog:
    """Appends {"step", ..., "images_per_s"} lines to DIR/log.jsonl; on resume drops lines past `step`."""

    def __init__(self, out_dir, *, start_step: int = 0):
        self.path = Path(out_dir) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if start_step > 0 and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= start_step]
        self.path.write_text("".join(line + "\n" for line in kept))
        self.images, self.t0 = 0, time.perf_counter()

    def count(self, images: int) -> float:
        """Add `images` processed; returns images/s since the last `write`."""
        self.images += images
        return self.images / max(time.perf_counter() - self.t0, 1e-9)

    def write(self, step: int, **values) -> dict:
        record = {"step": step, **values, "images_per_s": round(self.count(0), 2)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.images, self.t0 = 0, time.perf_counter()
        return record
