#!/usr/bin/env bash
# The GPU check of docs/performance.md: bf16 vs fp32 speed, the studio's latency and
# the agreement tests (golden fixtures in fp32 at 1e-4, bf16 agreement) on CUDA. Run from the
# repository root on a machine with a GPU:
#     bash deris_core/gpu_check.sh            # about 3-5 minutes on one GPU
# DEVICE=cpu CONFIGS=deris-tiny bash deris_core/gpu_check.sh   checks the script itself without a GPU.
set -euo pipefail
DEVICE="${DEVICE:-cuda}"
CONFIGS="${CONFIGS:-deris-b-grefcoco deris-l-grefcoco}"
python - <<PY
import torch
print("torch", torch.__version__, "| device $DEVICE |", torch.cuda.get_device_name(0) if "$DEVICE" == "cuda" else "cpu")
PY
for cfg in $CONFIGS; do
  for dtype in fp32 bf16; do
    python -m deris_core.tools.bench --config "$cfg" --device "$DEVICE" --dtype "$dtype"
    python -m app.bench latency --config "$cfg" --device "$DEVICE" --dtype "$dtype"
  done
done
for dtype in fp32 bf16; do
  python -m app.bench latency --config bundled --device "$DEVICE" --dtype "$dtype"
done
DERIS_TEST_DEVICE="$DEVICE" python -m pytest -q -s -p no:cacheprovider tests/test_fixtures.py tests/test_precision_agreement.py
