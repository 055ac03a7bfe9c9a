# syntax=docker/dockerfile:1.7
# The Tally operator image (kopf): python -m tally_operator.
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t registry.example.com/tally/tally-operator:0.1.0 .
# It carries only the operator and its dependencies (kopf, httpx), not the MPC engine.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/operator \
    && /opt/operator/bin/pip install "kopf>=1.37" "httpx>=0.27"
COPY operator/tally_operator ./tally_operator
# Installed as plain source on the venv's path: the operator needs none of the
# project's service dependencies (numpy, grpc, SQLAlchemy, ...).
RUN site=$(/opt/operator/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
    && cp -r tally_operator "$site/" \
    && /opt/operator/bin/python -m compileall -q "$site/tally_operator" \
    && /opt/operator/bin/python -c "import tally_operator.main"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/operator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 tally \
    && useradd --system --uid 10001 --gid tally --home-dir /nonexistent --shell /usr/sbin/nologin tally
COPY --from=build /opt/operator /opt/operator
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["python", "-m", "tally_operator"]
CMD ["--liveness=http://0.0.0.0:8080/healthz"]
