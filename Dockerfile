# The app and its pinned dependencies, for every container that runs app code
# (the SuperExecs of the ServerApp and of each ClientApp). The SuperLink and
# the SuperNodes use Flower's own images; see docker-compose.yml.
#
#   docker build -t llmqfl .                                   # CPU torch (default)
#   docker build -t llmqfl-cuda --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#   bash deploy/build-offline.sh --base llmqfl-base:bookworm   # no registry, no network
#
# BASE_IMAGE is any Debian-like image with Python 3.11 and venv: the default
# python:3.11-slim, or one built without a registry by deploy/local-base.sh.
# When deploy/wheels holds wheels (deploy/build-offline.sh puts them there),
# everything is installed from them with --no-index, so the build needs no
# network (docker build --network none); otherwise from the index. PyPI's
# Linux torch wheel is the CUDA build; the default index is PyTorch's
# CPU-only one, which keeps the image about 2 GB smaller.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
COPY deploy/wheels/ /wheels/
RUN python3 -m venv /opt/venv \
    && if ls /wheels/*.whl >/dev/null 2>&1; then \
         pip install --no-index --find-links /wheels "torch==${TORCH_VERSION}"; \
       else \
         pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; \
       fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config/ config/
COPY tasks/ tasks/
COPY llm/ llm/
COPY quantum/ quantum/
COPY strategies/ strategies/
COPY server_app/ server_app/
COPY client_app/ client_app/
COPY harness/ harness/
RUN if ls /wheels/*.whl >/dev/null 2>&1; then \
      pip install --no-index --find-links /wheels .; \
    else \
      pip install .; \
    fi

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    HF_HOME=/cache/huggingface \
    LLMQFL_CACHE_DIR=/cache/llmqfl
COPY --from=build /opt/venv /opt/venv
# /app/state: a SuperLink's database when this image runs one (the compose test does).
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /results /cache /app/state \
    && chown app:app /results /cache /app/state
USER app
WORKDIR /app
ENTRYPOINT ["flower-superexec"]
