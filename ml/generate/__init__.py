"""Synthetic e-commerce data with learnable, documented behaviour (see docs/generator.md).

from ml.generate import generate, SCALES
summary = generate(scale="tiny", seed=42, lake_dir=path)
"""

from ml.generate.core import generate
from ml.generate.params import END_DATE, SCALES, Behaviour

__all__ = ["generate", "SCALES", "END_DATE", "Behaviour"]
