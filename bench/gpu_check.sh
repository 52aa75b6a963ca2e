#!/usr/bin/env bash
# The GPU check in one command, for a machine where this repository is copied but not installed:
# CUDA results against the CPU reference, then timings per model (sparserefine_ros/tools/gpu_check.py, sparserefine_ros/device_check/).
#
#   bash bench/gpu_check.sh OUT_DIR [gpu-check options, e.g. --models hrnet-synth --compile]
#
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md. Uses python3 (or $PYTHON), which must
# hold torch; the package runs from the source tree. Wheels for anything else it should use (an
# optional sparse backend) go in .whl/ at the repository root and are installed to a temporary
# folder first, with no index and no dependencies resolved.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: bench/gpu_check.sh OUT_DIR [gpu-check options]}"
shift
python="${PYTHON:-python3}"

if compgen -G "$repo/.whl/*.whl" >/dev/null; then
  site="$(mktemp -d)"
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$repo"/.whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

mkdir -p "$out"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
fi
exec "$python" -m sparserefine_ros.tools.gpu_check --json "$out/gpu_check.json" "$@"
