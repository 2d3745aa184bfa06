"""The feature store (Feast over the dbt feature marts): configuration, contract, training sets.

    from ml.features import repo, training
    repo.apply(settings)                                  # contract check + validate + `feast apply`
    repo.plan(settings)
    repo.validate_sources(settings)
    repo.list_feature_services(settings)
    store = repo.get_store(settings)
    df = training.build_training_set(settings, entity_df, "propensity_lgbm_v1")

Importing this package does not import Feast (DAG files may import it at parse time).
"""
