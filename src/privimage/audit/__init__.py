"""`privimage audit`: an empirical lower bound on epsilon from one training run with canaries.

one_run.py (Steinke et al. 2023 bound), fdp.py (Mahloujifar et al. 2024 refinement), bound.py (guesses
-> bound at a confidence), whitebox.py (Dirac canaries through the real engine), blackbox.py (canary
images, final model's loss), run.py (a config's audit), commands.py (the CLI). See docs/audit.md.
"""
