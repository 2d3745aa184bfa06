"""Orchestration: what the Airflow DAGs call, the chain's order, and a local Airflow to run them in.

    tasks.py          the task bodies: each task in ``dags/`` is one call into it (what a DAG author reads)
    chain.py          the chain, defined once: DAG ids in run order, each model family's task bodies
    local_airflow.py  a real local Airflow (``airflow standalone``), its REST client, ``run_chain``
    demo.py           ``ecomml demo``: the chain through a local Airflow, proof of serving, where to look

The DAG files import ``tasks`` and ``chain`` only; nothing here imports Airflow, Feast or pandas at
module import. ``make demo`` runs ``ecomml demo`` (ml/cli.py); ``ecomml airflow --help`` lists the rest.
"""
