"""noise.key: the release's only secret is created owner-only before spending, reused on resume, refused when lost."""

import pytest

from privimage.errors import UserError
from privimage.privacy import noise_key
from privimage.privacy.rng import NoiseSource


def test_created_0600_then_reused_then_deleted(tmp_path):
    path = tmp_path / "ft" / noise_key.KEY_FILE
    first = noise_key.load_or_create(path, charged=0)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_bytes() == first.secret()
    again = noise_key.load_or_create(path, charged=5)  # a resume: same key, same noise
    assert again.secret() == first.secret() and not again.is_test
    noise_key.delete(path)
    assert not path.exists()


def test_lost_key_with_charged_steps_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"noise\.key: missing, but 2 DP-SGD steps were charged"):
        noise_key.load_or_create(tmp_path / noise_key.KEY_FILE, charged=2)
    assert not (tmp_path / noise_key.KEY_FILE).exists()


def test_damaged_or_foreign_key_is_refused(tmp_path):
    path = tmp_path / noise_key.KEY_FILE
    path.write_bytes(b"short")
    with pytest.raises(UserError, match="damaged noise key"):
        noise_key.load_or_create(path, charged=1)
    path.write_bytes(NoiseSource.from_test_seed(1).secret())
    with pytest.raises(UserError, match="does not come from test seed 2"):
        noise_key.load_or_create(path, charged=1, test_seed=2)
    assert noise_key.load_or_create(path, charged=1, test_seed=1).is_test
