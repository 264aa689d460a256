"""Privacy core: accounting (PLD, RDP cross-check), the ledger, the noise generator, the DP-SGD engine.

    mechanism.py   Mechanism: one Gaussian release or one DP-SGD run (a ledger entry)
    accountant.py  epsilon_pld, epsilon_rdp, calibrate_sigma, check_delta
    ledger.py      Ledger: append-only, atomically written record of every mechanism, budget enforced
    rng.py         noise_generator: seeded from os.urandom unless a seed is given
    dpsgd.py       per-sample gradients (torch.func), clipping, noise, Poisson batches; DPSGD engine
    commands.py    `privimage privacy epsilon | calibrate`
"""
