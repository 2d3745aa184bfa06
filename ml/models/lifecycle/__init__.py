"""The lifecycle every model shares.

splits.py      time_split(frame, time_col, n_valid, n_test, gap_days) -> Split(train, valid, test, boundaries)
evaluate.py    binary_metrics, lift_table, calibration_table, group_metrics (fairness), check_labels
report.py      Report(title).text/.metrics/.table/.figure/.write(dir) -> index.html + PNGs;
               plot_roc_pr, plot_calibration, plot_lift_gain, plot_importance; list_reports, report_dir
registry.py    MLflow tracking + model registry: client, training_run, log_model, log_report,
               promote_if_not_worse (champion alias), load_champion (the only place that knows
               where model artifacts live)
outputs.py     batch outputs: one Parquet partition per scoring date + the file behind a Feast view
config.py      CONFIGS_DIR (``ml/models/configs/<model>.yaml``) and as_config (YAML section -> dataclass)
"""
