# Atelier studio image for NVIDIA GPUs.
#   docker build -t atelier .
#   docker run --gpus all -p 7860:7860 \
#     -v atelier-models:/data/models -v atelier-loras:/data/loras \
#     -v atelier-outputs:/data/outputs -v atelier-hf:/data/hf atelier
# Settings are ATELIER_* variables (README "Settings"), e.g. -e ATELIER_AUTH=ann:secret.
# torch 2.14.1 from PyPI is built against CUDA 13 and ships its CUDA libraries as
# wheels; the base image provides the driver-facing runtime.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

# The Python the test suite ran with; Ubuntu 24.04's own python3 is 3.12.
ARG PYTHON_VERSION=3.11.7

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    ATELIER_HOST=0.0.0.0 \
    ATELIER_PORT=7860 \
    ATELIER_MODELS_DIR=/data/models \
    ATELIER_LORAS_DIR=/data/loras \
    ATELIER_OUTPUTS_DIR=/data/outputs \
    ATELIER_CACHE_DIR=/data/cache \
    HF_HOME=/data/hf

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl ffmpeg python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# uv (pinned) installs the pinned Python and the pinned requirements into /opt/venv.
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir uv==0.13.9 \
    && /opt/uv/bin/uv python install "${PYTHON_VERSION}" \
    && /opt/uv/bin/uv venv --python "${PYTHON_VERSION}" /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY requirements.txt ./
# xformers is for GPU images only (requirements.txt is what the CPU tests run with).
RUN /opt/uv/bin/uv pip install --python /opt/venv/bin/python -r requirements.txt xformers==0.0.35

RUN useradd --create-home --uid 1000 atelier \
    && mkdir -p /data/models /data/loras /data/outputs /data/cache /data/hf \
    && chown -R atelier:atelier /data
COPY --chown=atelier:atelier app.py ./
COPY --chown=atelier:atelier pipelines ./pipelines
COPY --chown=atelier:atelier ui ./ui
COPY --chown=atelier:atelier assets ./assets
USER 1000:1000

VOLUME ["/data/models", "/data/loras", "/data/outputs", "/data/cache", "/data/hf"]
EXPOSE 7860
# The first start builds the built-in models and loads weights: give it time. "/" answers
# with or without --auth (the login page); the port is the one set above.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:7860/"]
CMD ["python", "app.py"]
