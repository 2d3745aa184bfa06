"""Feature views over model outputs: batch scores written by ``ml.models`` (not dbt marts).

Each model's scorer rewrites ``$SCORES_DIR/<model>.parquet`` (the latest scores of every scoring
date, stamped with the scoring time) after writing its dated partition; the score DAGs then
materialize the view so that online reads (``get_online_features``) return the current score.
Hand-written: the generated data_sources.py / feature_views.py cover the dbt feature marts only.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String

from entities import user

# Where ml.models writes scores (Settings.scores_dir, handed over as $SCORES_DIR by ml.features.repo).
SCORES_DIR = Path(os.environ.get("SCORES_DIR") or Path(__file__).resolve().parent.parent / "data" / "warehouse" / "scores")

# propensity_lgbm (ml/models/propensity.py): P(order in the horizon) with its top SHAP contributions.
propensity_lgbm_scores_source = FileSource(
    name="propensity_lgbm_scores_source",
    path=str(SCORES_DIR / "propensity_lgbm.parquet"),
    timestamp_field="event_timestamp",
    description="Batch scores of the champion propensity_lgbm model, one row per user per scoring date",
    tags={"model": "propensity_lgbm"},
    owner="data-platform",
)

user_propensity = FeatureView(
    name="user_propensity",
    entities=[user],
    ttl=timedelta(days=14),  # a score older than two weekly scorings is not served
    schema=[
        Field(name="propensity_score", dtype=Float64, description="P(non-cancelled order within the horizon)"),
        Field(name="propensity_decile", dtype=Int64, description="1 = top 10 % of the scoring date's users"),
        Field(name="model_version", dtype=String, description="Registered propensity_lgbm version that scored"),
        Field(name="top_feature_1", dtype=String, description="Feature with the largest absolute contribution"),
        Field(name="top_contribution_1", dtype=Float64, description="Its SHAP contribution (log-odds)"),
        Field(name="top_feature_2", dtype=String, description="Second largest contribution"),
        Field(name="top_contribution_2", dtype=Float64, description="Its SHAP contribution (log-odds)"),
        Field(name="top_feature_3", dtype=String, description="Third largest contribution"),
        Field(name="top_contribution_3", dtype=Float64, description="Its SHAP contribution (log-odds)"),
    ],
    source=propensity_lgbm_scores_source,
    online=True,
    description="Current purchase-propensity score per user, with explanations (model propensity_lgbm)",
    owner="data-platform",
    tags={"model": "propensity_lgbm", "produced_by": "ml.models.propensity.score"},
)

# What consumers (CRM, on-site personalisation) read online: the score and its explanations.
propensity_scores_v1 = FeatureService(
    name="propensity_scores_v1",
    features=[user_propensity],
    description="Current propensity_lgbm score per user with its top contributions (entity user)",
    owner="data-platform",
    tags={"model": "propensity_lgbm", "version": "1", "entities": "user", "kind": "scores"},
)
