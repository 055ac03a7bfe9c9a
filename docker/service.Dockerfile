# syntax=docker/dockerfile:1.7
# The Tally services image: secret-store, tuple-service, execution and its workers.
# One image, three entry points (the Helm chart sets the command):
#   python -m tally.secret_store serve | python -m tally.tuples | python -m tally.execution
# Build from the repository root, with the base image pinned by digest:
#   docker build -f docker/service.Dockerfile \
#     --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> \
#     -t registry.example.com/tally/tally:0.1.0 .
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` prints the digest.)
#
# Every package comes from requirements/service.txt, checked against its sha256 hashes,
# as wheels only (nothing is compiled). The runtime stage gets the virtualenv and
# nothing else: no pip, setuptools or compiler, no gRPC stub compiler, and none of
# the client's libraries (matplotlib, rich, pyarrow).

# The same image for both stages (the virtualenv points at its interpreter).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/service.txt requirements/build.txt ./requirements/
# /opt/build: what compiles the stubs and builds tally's wheel (grpcio-tools,
# setuptools); /opt/tally: the runtime virtualenv, made without pip and filled by
# /opt/build's pip.
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --only-binary=:all: --no-deps \
       -r requirements/build.txt \
    && python -m venv --without-pip /opt/tally \
    && /opt/build/bin/pip --python /opt/tally/bin/python install \
       --require-hashes --only-binary=:all: --no-deps -r requirements/service.txt
COPY pyproject.toml README.md ./
COPY services ./services
COPY operator ./operator
COPY proto ./proto
COPY scripts ./scripts
# The gRPC stubs are build output (never edited by hand): generate, build the wheel
# with the locked setuptools, install it alone (its dependencies are all in already).
RUN /opt/build/bin/python scripts/gen_protos.py \
    && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /src/dist . \
    && /opt/build/bin/pip --python /opt/tally/bin/python install --no-deps /src/dist/tally-*.whl \
    && /opt/tally/bin/python -c "import tally.secret_store.app, tally.tuples.app, tally.execution.app"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/tally/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base image's own pip, setuptools and wheel are not needed to run anything.
RUN python -m pip uninstall --yes --no-input pip setuptools wheel \
    && groupadd --system --gid 10001 tally \
    && useradd --system --uid 10001 --gid tally --home-dir /nonexistent --shell /usr/sbin/nologin tally
COPY --from=build /opt/tally /opt/tally
# Runs with a read-only root filesystem: writable paths (/tmp, state) are volumes.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 7100 7200
ENTRYPOINT []
CMD ["python", "-m", "tally.execution", "--host", "0.0.0.0", "--port", "8000"]
