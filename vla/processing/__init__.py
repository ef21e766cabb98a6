"""Pre- and post-processing around the model: normalisation (stats in the checkpoint) and augmentation."""

from vla.processing.augment import ImageAugment, color_jitter, random_shift
from vla.processing.normalize import Normalizer

__all__ = ["ImageAugment", "Normalizer", "color_jitter", "random_shift"]
