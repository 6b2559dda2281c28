# A base for `make image GPU=1`: NVIDIA's CUDA 13 runtime with cuDNN 9 (what onnxruntime-gpu 1.2x+
# is built for) plus Ubuntu's Python and venv, which the CUDA images lack. This build alone fetches
# packages (Ubuntu's); an air-gapped farm passes its own BASE with the same contents instead.
#   docker build -f deploy/image/cuda-base.Dockerfile -t forwardpass-cuda-base deploy/image
ARG CUDA=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
FROM ${CUDA}
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
