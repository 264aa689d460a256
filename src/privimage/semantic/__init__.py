"""Steps 1-3 of PrivImage: semantic query function, DP semantic distribution, selection.

classifier.py  1. a classifier of the PUBLIC labels (`train_classifier`, `predict_topk`, checkpoints)
query.py       2. `dp_semantic_distribution`: noisy (S, P) top-k histogram, charged to the ledger
selection.py   3. `select` disjoint public classes per sensitive class, `apply_selection` relabels them
"""
