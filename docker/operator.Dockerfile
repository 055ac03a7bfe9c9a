# syntax=docker/dockerfile:1.7
# The Tally operator image (kopf): python -m tally_operator.
# Build from the repository root, with the base image pinned by digest:
#   docker build -f docker/operator.Dockerfile \
#     --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> \
#     -t registry.example.com/tally/tally-operator:0.1.0 .
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` prints the digest.)
#
# It carries only the operator and its dependencies (requirements/operator.txt, checked
# against their sha256 hashes, wheels only), not the MPC engine; the runtime stage gets
# the virtualenv and nothing else (no pip, setuptools or compiler).

# The same image for both stages (the virtualenv points at its interpreter).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/operator.txt ./requirements/
# /opt/operator is made without pip and filled by the base image's pip.
RUN python -m venv --without-pip /opt/operator \
    && python -m pip --python /opt/operator/bin/python install \
       --require-hashes --only-binary=:all: --no-deps -r requirements/operator.txt
COPY operator/tally_operator ./tally_operator
# Installed as plain source on the venv's path: the operator needs none of the
# project's service dependencies (numpy, grpc, SQLAlchemy, ...).
RUN site=$(/opt/operator/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
    && cp -r tally_operator "$site/" \
    && /opt/operator/bin/python -m compileall -q "$site/tally_operator" \
    && /opt/operator/bin/python -c "import tally_operator.main"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/operator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base image's own pip, setuptools and wheel are not needed to run anything.
RUN python -m pip uninstall --yes --no-input pip setuptools wheel \
    && groupadd --system --gid 10001 tally \
    && useradd --system --uid 10001 --gid tally --home-dir /nonexistent --shell /usr/sbin/nologin tally
COPY --from=build /opt/operator /opt/operator
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["python", "-m", "tally_operator"]
CMD ["--liveness=http://0.0.0.0:8080/healthz"]
