# Atelier studio image for NVIDIA GPUs.
#   docker build -t atelier .
#   docker run --gpus all -p 7860:7860 -v atelier-models:/data/models -v atelier-outputs:/data/outputs atelier
# torch 2.14.1 from PyPI is built against CUDA 13 and ships its CUDA libraries as
# wheels; the base image provides the driver-facing runtime.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    ATELIER_MODELS_DIR=/data/models \
    ATELIER_LORAS_DIR=/data/loras \
    ATELIER_OUTPUTS_DIR=/data/outputs \
    ATELIER_CACHE_DIR=/data/cache \
    HF_HOME=/data/hf

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip curl ffmpeg \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 atelier \
    && mkdir -p /data/models /data/loras /data/outputs /data/cache /data/hf /opt/venv \
    && chown -R atelier:atelier /data /opt/venv
USER atelier
WORKDIR /home/atelier/app

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY --chown=atelier:atelier requirements.txt ./
RUN pip install -r requirements.txt && pip install xformers==0.0.35
COPY --chown=atelier:atelier . .

VOLUME ["/data/models", "/data/loras", "/data/outputs", "/data/cache", "/data/hf"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import sys; from pipelines.settings import ENGINE_SETTINGS; sys.exit(0)"
CMD ["python", "app.py"]
