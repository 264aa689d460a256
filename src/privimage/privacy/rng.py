"""The randomness of every mechanism that touches sensitive data: unpredictable, counter-based, hardened.

Why not torch.Generator: on CPU it is MT19937 and only 32 bits of its seed take effect, so a seed search
over released noisy values (e.g. integer counts + noise) recovers the noise and the exact counts. Here
every draw is ChaCha20 (RFC 8439, via the `cryptography` package) keyed with 256 bits from os.urandom:
without the key the stream is indistinguishable from random, whatever an adversary has seen.

Counter-based: a draw is a pure function of (key, stream, counter, index), e.g. the DP noise of step t
is stream "finetune/noise", counter t. So
  * nothing but the 32-byte key is needed to replay a step after a crash (no generator state to save);
  * ranks of a multi-process job that share the key draw identical Poisson masks without talking;
  * each (stream, counter, index) must be drawn once: a second draw would reuse noise (ChaCha20 nonce
    reuse), so this object refuses it (RuntimeError).
Streams are domain-separated by subkeys HMAC-SHA256(key, stream); the nonce is (counter, index).

Gaussian noise is hardened against floating-point attacks (Mironov 2012; Holohan & Braghin 2021) as in
Opacus' secure mode: each value is the sum of 4 independent Box-Muller normals (53-bit uniforms, float64)
divided by 2, then scaled and cast. The bytes come from the CPU (ChaCha20 runs at several GB/s); the
float transform runs on the target device.

A fixed seed (`NoiseSource.from_test_seed`) makes the key public and the noise predictable: it is for
tests only, and `describe()` (recorded in the ledger) says so.

Example:
    >>> src = NoiseSource.fresh()
    >>> src.describe()
    'chacha20, 256-bit key from os.urandom'
    >>> src.gaussian((2, 3), std=1.0, stream="finetune/noise", counter=1).shape
    torch.Size([2, 3])
"""

import hashlib
import hmac
import math
import os
import struct

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

KEY_BYTES = 32
TEST_SEED_PREFIX = b"privimage test seed (NOT private): "
_MAX_COUNTER = 2**64 - 1
_MAX_INDEX = 2**32 - 1
_HARDENING_DRAWS = 4  # normals summed per output value (Opacus secure mode)


class NoiseSource:
    """Counter-based cryptographically secure random numbers for one release (see the module docstring)."""

    def __init__(self, key: bytes, *, description: str):
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise ValueError(f"key must be {KEY_BYTES} bytes")
        self._key = bytes(key)
        self._description = description
        self._used: set[tuple[str, int, int]] = set()

    @classmethod
    def fresh(cls) -> "NoiseSource":
        """A new key from the operating system's entropy pool: the default for every release."""
        return cls(os.urandom(KEY_BYTES), description="chacha20, 256-bit key from os.urandom")

    @classmethod
    def from_test_seed(cls, seed: int) -> "NoiseSource":
        """A key derived from a public integer: reproducible, NOT private (tests and debugging only)."""
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"test seed must be a non-negative int, got {seed!r}")
        key = hashlib.sha256(TEST_SEED_PREFIX + str(seed).encode()).digest()
        return cls(key, description=f"test seed {seed} (NOT private: the noise is predictable)")

    @classmethod
    def from_secret(cls, secret: bytes, *, description: str) -> "NoiseSource":
        """Rebuild a source from `secret()` to replay draws after a crash (same key, same streams)."""
        return cls(secret, description=description)

    def secret(self) -> bytes:
        """The key. Whoever holds it can recompute every draw: keep it apart from released files."""
        return self._key

    def describe(self) -> str:
        """What the ledger records about the noise (never the key)."""
        return self._description

    @property
    def is_test(self) -> bool:
        return self._description.startswith("test seed")

    def random_bytes(self, nbytes: int, *, stream: str, counter: int, index: int = 0) -> bytearray:
        """`nbytes` of the keystream of (stream, counter, index); each triple may be drawn once."""
        if not stream or not isinstance(stream, str):
            raise ValueError(f"stream must be a non-empty string, got {stream!r}")
        if not (isinstance(counter, int) and 0 <= counter <= _MAX_COUNTER):
            raise ValueError(f"counter must be an int in [0, 2**64), got {counter!r}")
        if not (isinstance(index, int) and 0 <= index <= _MAX_INDEX):
            raise ValueError(f"index must be an int in [0, 2**32), got {index!r}")
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        slot = (stream, counter, index)
        if slot in self._used:
            raise RuntimeError(f"random stream {stream!r} counter {counter} index {index} was already drawn; "
                               "drawing it again would reuse noise")
        self._used.add(slot)
        subkey = hmac.new(self._key, stream.encode(), hashlib.sha256).digest()
        nonce = struct.pack("<IQI", 0, counter, index)  # 32-bit block counter (starts at 0) + 96-bit nonce
        out = bytearray(nbytes)
        if nbytes:
            encryptor = Cipher(algorithms.ChaCha20(subkey, nonce), mode=None).encryptor()
            encryptor.update_into(bytes(nbytes), out)  # keystream XOR zeros = keystream
        return out

    def uniform(self, n: int, *, stream: str, counter: int, index: int = 0, device="cpu") -> torch.Tensor:
        """(n,) float64 uniforms in the open interval (0, 1), 53 random bits each."""
        raw = self.random_bytes(8 * n, stream=stream, counter=counter, index=index)
        words = torch.frombuffer(raw, dtype=torch.int64) if n else torch.zeros(0, dtype=torch.int64)
        words = words.to(device)
        return ((words >> 11) & ((1 << 53) - 1)).double().add_(0.5).mul_(2.0**-53)

    def bernoulli(self, n: int, *, p: float, stream: str, counter: int, index: int = 0, device="cpu") -> torch.Tensor:
        """(n,) bool, each True independently with probability p (Poisson sampling)."""
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        return self.uniform(n, stream=stream, counter=counter, index=index, device=device) < p

    def gaussian(self, shape, *, std: float, stream: str, counter: int, index: int = 0, device="cpu",
                 dtype=torch.float32) -> torch.Tensor:
        """N(0, std^2) of `shape`, hardened: mean of 4 Box-Muller normals times 2, computed in float64."""
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"std must be a finite number >= 0, got {std!r}")
        shape = torch.Size(shape)
        m = shape.numel()
        pairs = (_HARDENING_DRAWS * m + 1) // 2  # Box-Muller turns 2 uniforms into 2 normals
        u = self.uniform(2 * pairs, stream=stream, counter=counter, index=index, device=device)
        radius = torch.sqrt(-2.0 * torch.log(u[:pairs]))  # (pairs,)
        angle = (2.0 * math.pi) * u[pairs:]
        normals = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[: _HARDENING_DRAWS * m]
        z = normals.view(_HARDENING_DRAWS, m).sum(0) / math.sqrt(_HARDENING_DRAWS)  # (m,) ~ N(0, 1)
        return (z * std).to(dtype).view(shape)

    def torch_generator(self, *, stream: str, counter: int, index: int = 0, device="cpu") -> torch.Generator:
        """A torch.Generator seeded from (stream, counter), for randomness that need NOT be secret.

        E.g. the diffusion loss's noise levels and noise images: privacy does not rest on them, but a
        replayed step must redraw them identically, so they are derived from the key like everything else.
        """
        seed = int.from_bytes(self.random_bytes(8, stream=stream, counter=counter, index=index), "little")
        seed &= (1 << 63) - 1
        return torch.Generator(device=device).manual_seed(seed)


def noise_source(seed: int | None = None) -> NoiseSource:
    """The noise of a release: fresh os.urandom key by default; `seed` only behind a test flag."""
    return NoiseSource.fresh() if seed is None else NoiseSource.from_test_seed(seed)


def noise_generator(seed: int | None = None, device: str | torch.device = "cpu") -> tuple[torch.Generator, str]:
    """A torch.Generator for NON-private randomness (initialisation, pre-training batches, sampling).

    Never use it for noise that protects sensitive data: use NoiseSource. seed=None seeds it from
    os.urandom (64 bits); the second value describes the seed.
    """
    generator = torch.Generator(device=device)
    if seed is None:
        generator.manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))
        return generator, "os.urandom"
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    generator.manual_seed(seed)
    return generator, f"seed={seed}"
