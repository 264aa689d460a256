"""The per-run training log (log.jsonl, one JSON object per logged step; TensorBoard too when installed).

Lines are appended, so a kill mid-write can leave a torn last line: a resumed run drops it (the steps
past the checkpoint are dropped anyway). A bad line before the last is damage, reported naming the file.
"""

import json
import numbers
import time
from pathlib import Path

from privimage.errors import UserError
from privimage.files import atomic_path
from privimage.log import tensorboard_writer


class RunLog:
    """Appends {"step", ..., "images_per_s"} lines to DIR/log.jsonl; on resume drops lines past `step`.

    timed=False leaves images_per_s out: DP fine-tuning's speed follows its realised Poisson batch sizes,
    an un-noised statistic of the sensitive data (see privimage/timings.py).
    """

    def __init__(self, out_dir, *, start_step: int = 0, timed: bool = True):
        self.path = Path(out_dir) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if start_step > 0 and self.path.is_file():
            kept = [line for line, record in read_log(self.path) if record["step"] <= start_step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))
        self.images, self.t0, self.timed = 0, time.perf_counter(), timed
        self.tensorboard = tensorboard_writer(self.path.parent, purge_step=start_step + 1 if start_step else None)

    def count(self, images: int) -> float:
        """Add `images` processed; returns images/s since the last `write`."""
        self.images += images
        return self.images / max(time.perf_counter() - self.t0, 1e-9)

    def write(self, step: int, **values) -> dict:
        record = {"step": step, **values}
        if self.timed:
            record["images_per_s"] = round(self.count(0), 2)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:  # the same values (only public or noised ones are ever logged)
            for key, value in record.items():
                if key != "step" and isinstance(value, numbers.Real):
                    self.tensorboard.add_scalar(f"{self.path.parent.name}/{key}", value, step)
            self.tensorboard.flush()
        self.images, self.t0 = 0, time.perf_counter()
        return record


def log_private_step(runlog: RunLog, bar, *, step: int, last: int, every: int, ledger, stats: dict) -> None:
    """DP fine-tuning's log line every `every` steps and at the `last`: epsilon so far (from the ledger) and the
    norm of the NOISY gradient. Nothing else: batch sizes and speed follow the sensitive data un-noised."""
    if step % every == 0 or step == last:
        record = runlog.write(step, epsilon=round(ledger.epsilon(), 4),
                              noisy_grad_norm=round(float(stats["noisy_grad_norm"]), 6))
        bar.set_postfix(eps=record["epsilon"])


def read_log(path: Path) -> list[tuple[str, dict]]:
    """(line, record) of every line of a log.jsonl; a torn LAST line (a kill mid-append) is skipped."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            int(record["step"])
        except (ValueError, KeyError, TypeError) as err:
            if i == len(lines) - 1:
                break  # torn by a kill while it was appended
            raise UserError(f"{path}: line {i + 1} is not a log record ({err.__class__.__name__}); "
                            f"delete the file to start a fresh log") from None
        records.append((line, record))
    return records
