"""The Python API: the README's example runs as written, in-memory ImageSets, pretrain -> finetune."""

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import privimage
from privimage.errors import UserError
from privimage.privacy.dpsgd import DPSGD
from privimage.privacy.rng import NoiseSource

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(heading: str) -> str:
    """The first ```python block after `heading` in the README."""
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_everything_in_all_is_importable():
    for name in privimage.__all__:
        assert getattr(privimage, name) is not None, name
    assert privimage.load_config is privimage.run_config.load_run_config
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        privimage.nope


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the run's temporary directory lands here
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(readme_block("## Python API"), namespace)
    fit = namespace["fit"]
    assert "epsilon" in capsys.readouterr().out
    assert fit.out_dir.parent == tmp_path and fit.method == "privimage"
    assert [m.name for m in fit.ledger.entries] == ["semantic_query", "finetune"]
    assert 4.5 < fit.epsilon <= 5.0  # calibrated to the budget, query included
    written = json.loads((fit.out_dir / "privimage" / "ledger.json").read_text())
    assert written["epsilon_pld"] == pytest.approx(fit.epsilon)  # the ledger on disk is the one reported
    assert 0.0 <= fit.metrics["ca"] <= 1.0 and fit.selection is not None
    samples = namespace["samples"]
    assert samples.x.shape == (20, 16, 16, 1) and samples.classes == [str(i) for i in range(10)]
    assert len(list((fit.out_dir / "png").glob("*.png"))) == 20
    with np.load(fit.out_dir / "privimage" / "samples.npz") as npz:
        assert list(npz["classes"]) == [str(i) for i in range(10)]  # class names travel with the samples


def test_fit_refuses_a_used_directory_for_in_memory_data(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    images = privimage.ImageSet.from_arrays(np.zeros((8, 16, 16, 1), np.uint8), [0, 1] * 4)
    with pytest.raises(UserError, match="already holds a run; in-memory data"):
        privimage.PrivImage("privimage:tiny.yaml").fit(images, images, out_dir=tmp_path)


def test_image_sets_from_arrays_and_datasets():
    x = torch.rand(6, 3, 20, 20)  # (N, C, H, W) floats in [0, 1], as torchvision's ToTensor gives
    images = privimage.ImageSet.from_arrays(x, torch.tensor([0, 1, 2, 0, 1, 2]), classes=["a", "b", "c"])
    assert images.x.shape == (6, 20, 20, 3) and images.x.dtype == np.uint8
    assert images.x[0, 0, 0, 0] == round(float(x[0, 0, 0, 0]) * 255)
    small = privimage.ImageSet.from_arrays(x * 2 - 1, [0] * 6, resolution=16, channels=1)  # [-1, 1] input
    assert small.x.shape == (6, 16, 16, 1)
    with pytest.raises(UserError, match="labels must lie in 0..2"):
        privimage.ImageSet.from_arrays(x, [0, 1, 2, 3, 0, 0], classes=["a", "b", "c"])

    class Pictures(torch.utils.data.Dataset):  # any map-style dataset of (image, label), PIL images here
        classes = ["dark", "light"]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return Image.new("L", (12 + i, 12 + i), color=40 + 200 * (i % 2)), i % 2

    pictures = privimage.ImageSet.from_dataset(Pictures(), resolution=16)
    assert pictures.x.shape == (4, 16, 16, 1) and pictures.classes == ["dark", "light"]
    assert list(pictures.y) == [0, 1, 0, 1] and pictures.x[1].min() > 200
    with pytest.raises(UserError, match="images of different sizes"):
        privimage.ImageSet.from_dataset(Pictures())


def test_finetune_takes_what_pretrain_returns(tmp_path):
    config = privimage.UNetConfig(img_resolution=16, in_channels=1, num_classes=2, nf=8, ch_mult=(1, 2),
                                  num_blocks=1, attn_resolutions=(), dropout=0.0)
    rng = np.random.default_rng(0)
    images = privimage.ImageSet.from_arrays(rng.integers(0, 256, (64, 16, 16, 1), dtype=np.uint8), [0, 1] * 32)
    net = privimage.EDMPrecond(privimage.UNet(config))
    ema = privimage.pretrain(net, images, config=privimage.PretrainConfig(steps=2, batch_size=8),
                             out_dir=tmp_path / "pretrain", seed=0, device="cpu", progress=False)
    assert not any(p.requires_grad for p in ema.parameters())  # an EMA copy is frozen ...
    ledger = privimage.Ledger(tmp_path / "ledger.json", delta=1e-3, epsilon_budget=50.0)
    ft = privimage.FinetuneConfig(steps=2, batch_size=16, micro_batch=8, multiplicity=1)
    out = privimage.finetune(ema, images, config=ft, noise_multiplier=1.0, ledger=ledger,
                             out_dir=tmp_path / "finetune", seed=0, device="cpu", progress=False)
    assert isinstance(out, privimage.EDMPrecond)  # ... and fine-tuning it just works
    assert [(m.name, m.steps) for m in ledger.entries] == [("finetune", 2)]

    frozen = privimage.EDMPrecond(privimage.UNet(config)).requires_grad_(False)
    optimizer = torch.optim.Adam(frozen.parameters())
    with pytest.raises(ValueError, match=r"call module.requires_grad_\(True\)"):  # the advice is the fix
        DPSGD(frozen, optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=8, sample_rate=0.5,
              noise=NoiseSource.from_test_seed(0))
