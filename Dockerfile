# semid: CPU by default. For a GPU image pass a CUDA base, e.g.
#   docker build --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 -t semid:gpu .
# (a CUDA base needs python3.11 + venv installed; the pinned torch wheel is then the CUDA build).
ARG BASE=python:3.11-slim
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /semid
COPY requirements.txt pyproject.toml README.md ./
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir -r requirements.txt
COPY . .
RUN .venv/bin/pip install --no-cache-dir --no-deps -e . && touch .venv/bin/.installed
CMD ["make", "reproduce"]
