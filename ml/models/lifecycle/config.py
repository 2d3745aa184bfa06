"""The model configs: ``CONFIGS_DIR`` (``ml/models/configs/<model>.yaml``, one file per model: data
windows, hyperparameters, promotion tolerances) and their hyperparameter sections as dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def as_config(cls: type[C], config: Any) -> C:
    """``config`` as an instance of the dataclass ``cls``: an instance passes through, a mapping (or
    None: the defaults) is checked for keys ``cls`` does not have, which raise naming them."""
    if isinstance(config, cls):
        return config
    values = dict(config or {})
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}")
    return cls(**values)
