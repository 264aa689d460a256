"""Dataset readers; every reader returns an ImageSet (see load_images for the formats)."""

from privimage.data.imageset import ImageSet
from privimage.data.load import load_images

__all__ = ["ImageSet", "load_images"]
