"""The one secret of a DP-SGD release: its NoiseSource key, kept in a file apart from every artefact.

Every random draw of DP fine-tuning (Poisson batches, diffusion-loss draws, dropout, the DP noise) is a
pure function of this 32-byte key and the step number, so a killed run replays its charged steps
exactly from the key alone; checkpoints hold no generator state. Whoever holds the key can recompute
the noise and strip it from the released model, so:
  * it is written atomically with mode 0600 BEFORE the first step is charged (`load_or_create`);
  * a resume that finds charged steps but no key refuses (it would release fresh noise for steps
    whose earlier noise may already have leaked through a checkpoint: two releases of one step);
  * it is deleted once the release is final (`delete`), so a finished run directory holds no secret.
"""

import os
from pathlib import Path

from privimage.errors import UserError
from privimage.files import atomic_path
from privimage.privacy.rng import KEY_BYTES, NoiseSource

KEY_FILE = "noise.key"


def load_or_create(path, *, charged: int, test_seed: int | None = None) -> NoiseSource:
    """The NoiseSource of the release whose key lives at `path`; creates the key when none was charged yet.

    test_seed: a public key derived from this integer (tests only; NOT private). A kept key must match it.
    """
    path = Path(path)
    wanted = None if test_seed is None else NoiseSource.from_test_seed(test_seed)
    if path.is_file():
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise UserError(f"{path}: damaged noise key ({len(key)} bytes, expected {KEY_BYTES})")
        if wanted is not None and key != wanted.secret():
            raise UserError(f"{path}: this run's noise key does not come from test seed {test_seed}")
        if wanted is not None:
            return wanted
        return NoiseSource.from_secret(key, description=NoiseSource.fresh().describe())
    if charged > 0:
        raise UserError(f"{path}: missing, but {charged} DP-SGD steps were charged; without the key they cannot be "
                        "replayed with their noise, so this run cannot resume (start a new release in a new --out)")
    source = wanted if wanted is not None else NoiseSource.fresh()
    with atomic_path(path) as tmp:  # mkstemp creates it 0600
        tmp.chmod(0o600)
        tmp.write_bytes(source.secret())
    return source


def delete(path) -> None:
    """Remove the key (the release is final) and make the removal durable."""
    path = Path(path)
    path.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
