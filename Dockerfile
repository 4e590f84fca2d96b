# One image for the router and every worker. CPU build of llama.cpp by default; for NVIDIA
# workers build with --build-arg CMAKE_ARGS="-DGGML_CUDA=on" on a CUDA base image.
FROM python:3.11-slim
# Portable CPU build by default: -march=native would enable AMX kernels that crash on Sapphire
# Rapids (ggml-org/llama.cpp#20824) and tie the image to the build host.
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
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
