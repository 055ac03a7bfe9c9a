# syntax=docker/dockerfile:1.7
# The Tally services image: secret-store, tuple-service, execution and its workers.
# One image, three entry points (the Helm chart sets the command):
#   python -m tally.secret_store serve | python -m tally.tuples | python -m tally.execution
# Build from the repository root:
#   docker build -f docker/service.Dockerfile -t registry.example.com/tally/tally:0.1.0 .

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/tally \
    && /opt/tally/bin/pip install "grpcio-tools>=1.60"
COPY pyproject.toml README.md ./
COPY services ./services
COPY operator ./operator
COPY proto ./proto
COPY scripts ./scripts
# The gRPC stubs are build output (never edited by hand): generate, then install.
RUN /opt/tally/bin/python scripts/gen_protos.py \
    && /opt/tally/bin/pip install . \
    && /opt/tally/bin/python -c "import tally.secret_store, tally.tuples, tally.execution"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/tally/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 tally \
    && useradd --system --uid 10001 --gid tally --home-dir /nonexistent --shell /usr/sbin/nologin tally
COPY --from=build /opt/tally /opt/tally
# Runs with a read-only root filesystem: writable paths (/tmp, state) are volumes.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 7100 7200
ENTRYPOINT []
CMD ["python", "-m", "tally.execution", "--host", "0.0.0.0", "--port", "8000"]
