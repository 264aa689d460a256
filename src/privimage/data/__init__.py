"""Dataset readers; every reader returns an ImageSet."""

from privimage.data.imageset import ImageSet

__all__ = ["ImageSet"]
