"""privimage: differentially private synthetic images by semantic-aware pre-training (PrivImage).

The five steps of the method live in five places:
    semantic/classifier.py  1. semantic query function (classifier on public labels)
    semantic/query.py       2. DP semantic distribution (noisy histogram, charged to the ledger)
    semantic/selection.py   3. selection of public classes, relabelled to sensitive classes
    train/pretrain.py       4. pre-training of the conditional generator on the selection
    train/finetune.py       5. DP fine-tuning on the sensitive data (DP-SGD, charged to the ledger)
`pipeline.py` runs them top to bottom.
"""

__version__ = "0.1.0"
