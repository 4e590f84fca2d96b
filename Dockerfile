# One image for the router and every worker. CPU build of llama.cpp by default; for NVIDIA
# workers build with --build-arg CMAKE_ARGS="-DGGML_CUDA=on" on a CUDA base image.
FROM python:3.11-slim
ARG CMAKE_ARGS=""
ENV CMAKE_ARGS=${CMAKE_ARGS} PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY router router
COPY workers workers
COPY examples examples
RUN pip install . flower
ENTRYPOINT ["ecobatch"]
