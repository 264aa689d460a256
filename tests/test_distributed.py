"""torchrun (gloo, 2 CPU processes): DP fine-tuning equals one process (also with empty shards) and survives a
crashed rank; pre-training's all-reduced gradient is the global batch's; sharded sampling (diffusion and GAN)
equals one process.

Each test launches `python -m torch.distributed.run --standalone --nproc_per_node 2` on a worker that is
`privimage` itself (the CLI entry joins the process group), optionally with one step of one rank made
to raise (only in these tests, by patching the engine inside the worker).
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from privimage.cli import main
from privimage.models.edm import EDMPrecond
from privimage.models.gan import GAN, GANConfig
from privimage.models.unet import CONFIGS, UNet
from privimage.privacy.poisson import poisson_batches
from privimage.privacy.rng import NoiseSource
from privimage.train.checkpoint import save_checkpoint
from privimage.train.ema import make_ema
from privimage.train.gan_checkpoint import save_gan_checkpoint

WORKER = '''
import os, sys
crash = os.environ.get("PRIVIMAGE_TEST_CRASH")  # "rank:step": that rank raises when it reaches that step
if crash:
    from privimage.privacy.dpsgd import DPSGD
    rank, at = map(int, crash.split(":"))
    original = DPSGD.step
    def step(self, *args, **kwargs):
        if int(os.environ["RANK"]) == rank and self.steps + 1 == at:
            raise RuntimeError(f"injected crash on rank {rank} at step {at}")
        return original(self, *args, **kwargs)
    DPSGD.step = step
from privimage.cli import main
sys.exit(main(sys.argv[1:]))
'''
STEPS = 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny pre-trained checkpoint and 30 sensitive 16x16 images of 10 classes."""
    root = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 16, 16, 1), dtype=np.uint8)
    np.savez(root / "sensitive.npz", x=x, y=np.arange(30) % 10)
    torch.manual_seed(0)
    net = EDMPrecond(UNet(CONFIGS["tiny"]))
    save_checkpoint(root / "pre", net=net, ema=net, optimizer=torch.optim.Adam(net.parameters()), step=0,
                    kind="pretrain", config={})
    (root / "worker.py").write_text(WORKER)
    return root


def finetune_args(root, out, *extra, batch=8):
    return ["finetune", "--ckpt", str(root / "pre"), "--sensitive", str(root / "sensitive.npz"), "--out", str(out),
            "--epsilon", "40", "--delta", "1e-3", "--steps", str(STEPS), "--batch", str(batch), "--micro-batch", "3",
            "--multiplicity", "2", "--seed", "3", "--device", "cpu", "--no-progress", *extra]


def torchrun(root, args, *, crash=None, nproc=2):
    env = {**os.environ, "PRIVIMAGE_DIST_TIMEOUT": "90", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env.pop("PRIVIMAGE_TEST_CRASH", None)
    if crash:
        env["PRIVIMAGE_TEST_CRASH"] = crash
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(root / "worker.py"), "--", *args]  # "--": torchrun would take `--n` for its own --nnodes...
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def one_process(inputs, tmp_path_factory):
    """The reference: the same fine-tuning in this process (no process group); one per expected batch size."""
    runs = {}

    def run(batch):
        if batch not in runs:
            runs[batch] = tmp_path_factory.mktemp("one") / "ft"
            assert main(finetune_args(inputs, runs[batch], batch=batch)) == 0
        return runs[batch]
    return run


def weights(out):
    return load_file(out / "model.safetensors")


def final_log(out):
    return json.loads((out / "log.jsonl").read_text().splitlines()[-1])


def assert_same_release(out, reference):
    """Same weights (within float tolerance: the sums are added in another order), same ledger."""
    got, want = weights(out), weights(reference)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    assert final_log(out)["noisy_grad_norm"] == pytest.approx(final_log(reference)["noisy_grad_norm"], rel=1e-4)
    ledger, ref_ledger = (json.loads((d / "ledger.json").read_text()) for d in (out, reference))
    assert [e["steps"] for e in ledger["entries"]] == [e["steps"] for e in ref_ledger["entries"]] == [STEPS]
    assert ledger["entries"][0]["noise_multiplier"] == ref_ledger["entries"][0]["noise_multiplier"]
    assert ledger["epsilon_pld"] == pytest.approx(ref_ledger["epsilon_pld"], rel=1e-12)
    assert not (out / "noise.key").exists()  # the release is final: the key is gone


def test_two_processes_equal_one_process(inputs, one_process, tmp_path):
    out = tmp_path / "ft"
    done = torchrun(inputs, finetune_args(inputs, out, "--json"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_release(out, one_process(8))
    state = json.loads((out / "state.json").read_text())
    assert (state["world_size"], state["step"]) == (2, STEPS)
    assert json.loads(done.stdout.strip().splitlines()[-1])["world_size"] == 2  # rank 0 alone prints it
    assert len(done.stdout.strip().splitlines()) == 1


def test_crashed_rank_fails_the_job_and_the_rerun_charges_each_step_once(inputs, one_process, tmp_path, capsys):
    # expected batch 2 of 30: steps 3 and 4 draw one example each, so rank 1's shard is empty there
    sizes = [len(idx) for _, idx in poisson_batches(30, sample_rate=2 / 30, steps=STEPS,
                                                    noise=NoiseSource.from_test_seed(3))]
    assert min(sizes) <= 1 < max(sizes)
    out = tmp_path / "ft"
    crashed = torchrun(inputs, finetune_args(inputs, out, batch=2), crash="1:2")
    assert crashed.returncode != 0
    assert "injected crash on rank 1 at step 2" in crashed.stderr
    charged = json.loads((out / "ledger.json").read_text())["entries"][0]["steps"]
    assert 1 <= charged <= 2  # rank 0 charges a step before its all-reduce; the crash stopped it there
    assert (out / "noise.key").exists()  # kept for the replay

    capsys.readouterr()
    assert main(finetune_args(inputs, out, "--resume", batch=2)) == 1  # one process cannot resume 2 processes' run
    assert "ran with world_size 2 processes; resume it with the same number" in capsys.readouterr().err
    assert json.loads((out / "ledger.json").read_text())["entries"][0]["steps"] == charged  # nothing spent

    resumed = torchrun(inputs, finetune_args(inputs, out, "--resume", batch=2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_release(out, one_process(2))  # replayed steps were not charged again: ledger steps == STEPS


GRADIENT_CHECK = '''
import os, sys, torch
from privimage import distributed
from privimage.cli import main
from privimage.models.edm import EDMPrecond
from privimage.models.gan import GAN, GANConfig
from privimage.models.unet import CONFIGS, UNet
from privimage.train.pretrain import all_reduce_grads

distributed.init()
torch.manual_seed(0)
net = EDMPrecond(UNet(CONFIGS["tiny"]))
x, y = torch.rand(5, 1, 16, 16) * 2 - 1, torch.arange(5)
sigma = torch.linspace(0.5, 3, 5)
def loss(idx):
    return ((net(x[idx], sigma[idx], y[idx]) - x[idx]) ** 2).mean(dim=(1, 2, 3))
loss(torch.arange(5)).mean().backward()  # one process, the whole batch
full = {n: p.grad.clone() for n, p in net.named_parameters()}
net.zero_grad(set_to_none=True)
mine = torch.tensor(list(distributed.shard(5)))  # 3 and 2 examples: unequal shares
share = loss(mine).sum() / 5  # this process's share of the global mean
share.backward()
total = all_reduce_grads(net, share)
worst = max(float((p.grad - full[n]).abs().max() / full[n].abs().max().clamp_min(1e-12))
            for n, p in net.named_parameters())
if distributed.is_main():
    whole = float(loss(torch.arange(5)).mean().detach())
    print(f"GRADIENT relative error {worst:.3g} loss {float(total):.6f} {whole:.6f}",
          file=sys.stderr)
import privimage.models.gan as gan_module
drawn = []  # the GAN latents this process drew
latents = gan_module.image_latents
gan_module.image_latents = lambda seeds, *a, **k: drawn.extend(seeds) or latents(seeds, *a, **k)
for argv in " ".join(sys.argv[1:]).split(" + "):
    if main(argv.split()) != 0:
        sys.exit(1)
print(f"GANDRAWN {distributed.rank()} {len(drawn)}", file=sys.stderr)
rank = distributed.rank()
distributed.destroy()  # what atexit does; gloo's threads must end here, not in Python's finalization
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")] \
    if os.path.isdir("/proc/self/task") else []
print(f"GLOOTHREADS {rank} {sum('gloo' in name for name in threads)}", file=sys.stderr)
'''


def test_pretraining_gradients_and_sampling_across_two_processes(inputs, tmp_path):
    (tmp_path / "worker.py").write_text(GRADIENT_CHECK)
    pre, samples = tmp_path / "pre", tmp_path / "two.npz"
    torch.manual_seed(0)
    gan = GAN(GANConfig(img_resolution=16, in_channels=1, num_classes=10, z_dim=8, g_width=16, d_width=4))
    optimizers = {"d": torch.optim.Adam(gan.D.parameters()), "g": torch.optim.Adam(gan.G.parameters())}
    save_gan_checkpoint(tmp_path / "gan", gan=gan, ema_g=make_ema(gan.G), optimizers=optimizers, step=0,
                        kind="pretrain", config={})
    args = (f"pretrain --data {inputs / 'sensitive.npz'} --out {pre} --config tiny --steps 2 --batch 5 --seed 1 "
            f"--device cpu --no-progress + sample --ckpt {inputs / 'pre'} --n 8 --batch 4 --steps 2 "
            f"--out {samples} --device cpu --no-progress + sample --ckpt {tmp_path / 'gan'} --n 9 --batch 4 "
            f"--out {tmp_path / 'gan_two.npz'} --device cpu --no-progress").split()
    done = torchrun(tmp_path, args)
    assert done.returncode == 0, done.stderr[-3000:]
    # the all-reduced gradient of the shares (3 + 2 examples) is the gradient of the global mean loss
    line = next(x for x in done.stderr.splitlines() if "GRADIENT" in x).split()
    assert float(line[3]) < 1e-4 and float(line[5]) == pytest.approx(float(line[6]), rel=1e-5)
    assert json.loads((pre / "state.json").read_text())["world_size"] == 2
    # sampling: each process sampled its block of seeds; gathered, the images equal one process's
    assert main(["sample", "--ckpt", str(inputs / "pre"), "--n", "8", "--batch", "4", "--steps", "2",
                 "--out", str(tmp_path / "one.npz"), "--device", "cpu", "--no-progress"]) == 0
    two, one = np.load(samples), np.load(tmp_path / "one.npz")
    np.testing.assert_array_equal(two["x"], one["x"])
    np.testing.assert_array_equal(two["y"], one["y"])
    assert two["x"][4:].any()  # rank 1's block arrived (not the zeros it was gathered into)
    # the GAN too: each process drew only its block of the 9 latents (5 + 4), gathered they equal one process
    # (findall: the processes leave together, so their last lines may share one line of the merged stderr)
    drawn = sorted(re.findall(r"GANDRAWN (\d+) (\d+)", done.stderr))
    assert drawn == [("0", "5"), ("1", "4")], done.stderr[-2000:]
    # After pre-training (its optimizer imports torch._dynamo), destroying the group still ends gloo's worker
    # threads; left running into Python's finalization, one aborted the process now and then (distributed.init)
    if os.path.isdir("/proc/self/task"):
        assert sorted(re.findall(r"GLOOTHREADS (\d+) (\d+)", done.stderr)) == [("0", "0"), ("1", "0")]
    assert main(["sample", "--ckpt", str(tmp_path / "gan"), "--n", "9", "--batch", "4",
                 "--out", str(tmp_path / "gan_one.npz"), "--device", "cpu", "--no-progress"]) == 0
    two, one = np.load(tmp_path / "gan_two.npz"), np.load(tmp_path / "gan_one.npz")
    np.testing.assert_array_equal(two["x"], one["x"])
    assert two["x"][5:].any()
