"""Models: the shared lifecycle (split, evaluate, report, registry) and the model modules using it.

    splits.py      time_split(frame, time_col, n_valid, n_test, gap_days) -> Split(train, valid, test, boundaries)
    evaluate.py    binary_metrics, lift_table, calibration_table, group_metrics (fairness), check_labels
    report.py      Report(title).text/.metrics/.table/.figure/.write(dir) -> index.html + PNGs;
                   plot_roc_pr, plot_calibration, plot_lift_gain, plot_importance; list_reports, report_dir
    registry.py    MLflow tracking + model registry: client, training_run, log_model,
                   promote_if_not_worse (champion alias), load_champion (the only place that knows
                   where model artifacts live)
    propensity.py  purchase propensity (LightGBM over the Feast service), RFM baseline, scoring
    sequence.py    GRU over a user's last N events
    cart.py        cart-abandonment curve and at-risk carts

Hyperparameters live in ``configs/<model>.yaml``; paths and endpoints in ``ml.settings``.
Importing this package (or any lifecycle module) imports no pandas, sklearn, matplotlib or MLflow:
those are imported inside the functions that need them.
"""
