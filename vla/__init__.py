"""Vision-language-action policies: model, training, evaluation and human supervision."""

from vla.types import FeatureSpec

__all__ = ["FeatureSpec"]
