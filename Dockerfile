# The `demo` service of docker-compose.yml: this repository, installed with pip, running
# `telemetry-infra demo --forever` against the bundled stack.
FROM python:3.12.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY telemetry_infra ./telemetry_infra
RUN pip install . && useradd --create-home --uid 10001 app

USER app
WORKDIR /home/app
EXPOSE 9464
CMD ["telemetry-infra", "demo", "--forever"]
