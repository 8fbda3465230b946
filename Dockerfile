# semid: CPU by default; `docker run semid` runs `make reproduce` (outputs in /semid) as the
# unprivileged user semid (uid 10001).
#   docker build -t semid .
# GPU image: a CUDA base and PyPI's torch (its Linux wheel of torch==2.13.0 is the CUDA build):
#   docker build --build-arg BASE=nvidia/cuda:13.0.2-runtime-ubuntu24.04 \
#     --build-arg APT_PYTHON="python3 python3-venv" --build-arg TORCH_INDEX_URL= -t semid:gpu .
#   docker run --gpus all -e GEMINI_API_KEY semid:gpu make reproduce  # or a paper-profile command
# Why that base: the lock needs Python >= 3.11 (pandas 3, numpy 2.4 and ~30 other pins declare it),
# and Ubuntu 24.04's apt python3 is 3.12, for which every pin has a wheel (torch 2.13.0 included);
# Ubuntu 22.04's python3 (3.10) cannot install the lock. CUDA 13.0 is what PyPI's torch 2.13.0 wheel
# is built against (it pulls cuda-toolkit 13.0 from PyPI), so the host needs an NVIDIA driver >= 580.
# Ubuntu 24.04 images already have a user `ubuntu` with uid 1000, hence 10001 here.
ARG BASE=python:3.11-slim
FROM ${BASE}
# Where torch comes from; the CPU wheel keeps the image small. Empty: PyPI's build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Python packages to apt-install on bases without Python (CUDA images).
ARG APT_PYTHON=""
RUN apt-get update && apt-get install -y --no-install-recommends git make ${APT_PYTHON} \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group semid \
    && mkdir /semid && chown semid:semid /semid
USER semid
WORKDIR /semid
COPY --chown=semid:semid requirements.txt pyproject.toml README.md ./
# torch first from TORCH_INDEX_URL at the locked version (2.13.0+cpu satisfies torch==2.13.0),
# then the same pinned lock as everywhere else.
RUN python3 -m venv .venv \
    && if [ -n "$TORCH_INDEX_URL" ]; then \
         .venv/bin/pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "$(grep -E '^torch==' requirements.txt)"; \
       fi \
    && .venv/bin/pip install --no-cache-dir -r requirements.txt
COPY --chown=semid:semid . .
RUN .venv/bin/pip install --no-cache-dir --no-deps -e . && touch .venv/bin/.installed
CMD ["make", "reproduce"]
