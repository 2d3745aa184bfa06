"""E-commerce ML data platform: Python logic (data, features, models) shared by the CLI and Airflow."""
