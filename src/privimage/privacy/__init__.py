"""Privacy core: accounting (PLD, RDP cross-check), the ledger, secure noise, the DP-SGD engine.

    mechanism.py   Mechanism: one Gaussian release or one DP-SGD run (a ledger entry)
    accountant.py  epsilon_pld, epsilon_rdp, calibrate_sigma, calibrate_for_ledger, check_delta
    ledger.py      Ledger: append-only, atomically written record of every mechanism, budget enforced
    rng.py         NoiseSource: ChaCha20, counter-based, hardened Gaussian; noise_generator (NOT for DP)
    noise_key.py   the release's only secret: noise.key (0600), kept for replay, deleted when final
    poisson.py     Poisson batches from the NoiseSource (counter = step)
    clipping/      phase (a): sum of clipped per-example gradients; exact (torch.func) | fast (per-layer rules)
    dpsgd.py       DPSGD engine: clipped sum -> reduce -> noise -> / E[B] -> step; replay; ledger charges
    commands.py    `privimage privacy epsilon | calibrate`
"""
