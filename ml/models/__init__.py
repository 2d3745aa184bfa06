"""Models: three families on one shared lifecycle.

    lifecycle/  what every model uses: splits (time split), evaluate (binary metrics, lift,
                calibration, fairness groups), report (HTML reports), registry (MLflow runs, the
                model registry, promotion, champion loading), outputs (batch score partitions),
                config (``configs/<model>.yaml`` and its hyperparameter dataclasses)
    user/       user behaviour: propensity (purchase propensity over the Feast service), sequence
                (GRU over a user's last events), cart (cart-abandonment curve, at-risk carts)
    recs/       recommendation: data -> candidates -> ranking -> training / scoring / serving, plus
                item embeddings and semantic search (``ml.models.recs`` is the family's API)
    demand/     supply chain: data (series preparation) -> forecasters -> rolling-origin backtest ->
                pipeline (train, forecast, inventory plan, promotion effect) (``ml.models.demand``)

Hyperparameters live in ``configs/<model>.yaml``; paths and endpoints in ``ml.settings``. The
offline evaluation protocols that only benchmarks use (RecBole's split, MovieLens) live in
``bench/``. Importing this package (or any lifecycle module) imports no pandas, sklearn, matplotlib
or MLflow: those are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# Registered models are pickled with their classes' module paths. Versions registered before the
# models moved into family folders name the old flat modules; these aliases keep them loadable.
_MOVED = {
    "ml.models.propensity": "ml.models.user.propensity",
    "ml.models.sequence": "ml.models.user.sequence",
    "ml.models.ranking": "ml.models.recs.ranking",
    "ml.models.forecast_models": "ml.models.demand.forecasters",
    "ml.models.forecast_data": "ml.models.demand.data",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        # the import system returns sys.modules[name] after exec_module: the moved module itself
        sys.modules[module.__name__] = importlib.import_module(_MOVED[module.__name__])


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
