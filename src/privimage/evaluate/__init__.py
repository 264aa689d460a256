"""Evaluation of synthetic images: CA (classifier trained on synthetic, tested on real), FID, precision/recall.

The report of a run directory lives in `privimage.evaluate.report`; CLI commands in `commands.py`.
"""

from privimage.evaluate.ca import classification_accuracies, classification_accuracy
from privimage.evaluate.classifiers import CLASSIFIERS
from privimage.evaluate.fid import fid_of_sets, frechet_distance, load_stats, save_stats

__all__ = [
    "CLASSIFIERS",
    "classification_accuracies",
    "classification_accuracy",
    "fid_of_sets",
    "frechet_distance",
    "load_stats",
    "save_stats",
]
