"""Supply-chain demand forecasting and the inventory plan.

    data.py            the series frame: the bad-input rules (each counted), calendar and lag
                       features, future frames; ``demand_date``/``units`` are the series' date and units
    forecasters.py     seasonal naive, moving average, global LightGBM, Prophet, global LSTM
    rolling_origin.py  rolling-origin backtest: WAPE, MASE, bias, coverage overall and per series
    inventory.py       the inventory policy: safety stock, reorder point, order-up-to, turnover
    causal.py          promotion effect: double ML and a difference-in-differences cross-check
    pipeline.py        on the warehouse: backtest, train + register, forecast + plan, promotion effect

This package is the family's API: ``from ml.models import demand`` then ``demand.train(settings)``,
``demand.forecast(...)``, ``demand.backtest(...)``: a name is looked up in ``pipeline`` when first
used (importing the package imports nothing else).
"""

from __future__ import annotations

import importlib


def __getattr__(name: str):
    if not name.startswith("__"):
        module = importlib.import_module(f"{__name__}.pipeline")
        if name in vars(module):
            return vars(module)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
