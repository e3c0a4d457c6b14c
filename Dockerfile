# The app and its pinned dependencies, for every container that runs app code
# (the SuperExecs of the ServerApp and of each ClientApp). The SuperLink and
# the SuperNodes use Flower's own images; see docker-compose.yml.
#
#   docker build -t llmqfl .                                   # CPU torch (default)
#   docker build -t llmqfl-cuda --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#
# PyPI's Linux torch wheel is the CUDA build; the default index is PyTorch's
# CPU-only one, which keeps the image about 2 GB smaller.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    HF_HOME=/cache/huggingface \
    LLMQFL_CACHE_DIR=/cache/llmqfl

WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY config/ config/
COPY tasks/ tasks/
COPY llm/ llm/
COPY quantum/ quantum/
COPY strategies/ strategies/
COPY server_app/ server_app/
COPY client_app/ client_app/
COPY harness/ harness/
RUN pip install . \
    && useradd --create-home --uid 1000 app \
    && mkdir -p /results /cache \
    && chown app:app /results /cache
USER app

ENTRYPOINT ["flower-superexec"]
