"""Library noise that says nothing to the people reading our logs, silenced at its source once.

Each entry names the library behaviour and why it is noise here; everything else a library logs
stays. ``feast()`` runs where a FeatureStore is made, ``mlflow()`` where MLflow is imported.

- Feast logs "Registry cache expired, so refreshing" at INFO on every registry read past its TTL:
  48 of 76 lines of an Airflow training task's log. Its registry loggers are set to WARNING.
- DuckDB 2.0 deprecates ``fetch_arrow_table()``, which ibis (Feast's DuckDB offline store) still
  calls: one DeprecationWarning per retrieval, nothing a user can act on.
- MLflow warns on every sklearn model logged with cloudpickle (our LogisticModel, rankers and
  forecasters are Python classes: skops cannot load them); the choice is made, the warning repeats it.
- MLflow prints "Successfully registered model ..." / "Created version ..." to stderr (not a
  logger), which Airflow's task log shows as ERROR; ``registered_quietly`` moves them to INFO.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

log = logging.getLogger(__name__)
_MLFLOW_PICKLE = "Saving scikit-learn models in the pickle or cloudpickle format"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def feast() -> None:
    for name in ("feast.infra.registry.registry", "feast.infra.registry.caching_registry"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning)


def mlflow() -> None:
    logger = logging.getLogger("mlflow.sklearn")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage(_MLFLOW_PICKLE))


@contextlib.contextmanager
def registered_quietly() -> Iterator[None]:
    """Run an MLflow model registration with its stderr prints logged at INFO instead."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip():
                log.info("mlflow: %s", line.strip())
