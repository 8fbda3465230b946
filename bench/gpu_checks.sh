#!/usr/bin/env bash
# GPU checks of the generator, run on a machine with one GPU over the pipeline's artifacts
# (data/prepared, data/queries, data/ids of the embedded default; `dvc repro quantize` first).
# Needs torch, transformers, tokenizers, pandas, pyarrow and pyyaml; semid from src/ (no install).
#   1. the paper profile's generator cost: a T5-base-sized scratch model (flan-t5-base's layers,
#      not its weights or 32k vocabulary) in bf16, training examples/s and the paper's
#      60-beam / 30-group diverse decoding, inputs/s;
#   2. the embedded generator's learning curve: search / rec Recall@30 after EPOCHS epochs.
# Usage: bash bench/gpu_checks.sh OUT_DIR [EPOCHS...]
set -uo pipefail
out=${1:?usage: bash bench/gpu_checks.sh OUT_DIR [EPOCHS...]}
shift
epochs=${*:-1.67 5 15}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import torch; print("torch", torch.__version__, "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)' \
    | tee "$out/device.txt"

timeout "${BASE_TIMEOUT:-180}" python3 bench/decode.py --steps 100 --inputs 64 \
    --set base.profile=paper --set generator.model=scratch --set generator.d_model=768 \
    --set generator.d_ff=2048 --set generator.num_layers=12 --set generator.num_decoder_layers=12 \
    --set generator.num_heads=12 2>&1 | grep -v '^{' | tee "$out/paper_generator.log"

# shellcheck disable=SC2086
timeout "${CURVE_TIMEOUT:-420}" python3 bench/generator_budget.py --epochs $epochs --out "$out/curve.jsonl" 2>&1 \
    | tee "$out/curve.log"
