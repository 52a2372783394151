#!/usr/bin/env bash
# The one GPU check of dcmp (docs/gpu.md): every CUDA code path, figures into $OUT (summary.txt first).
#
#   bash benchmarks/gpu_check.sh                      # on the GPU machine, from the repository root
#   CPU_SMOKE=1 bash benchmarks/gpu_check.sh          # here: the same steps on the CPU, tiny preset (plumbing)
#   bash benchmarks/gpu_check.sh --steps dehaze,video # a rerun of some steps (env always runs)
#
# Uses the system python3 with its own packages (or $PYTHON) and the project from this checkout
# (PYTHONPATH), so no virtual environment is needed. Wheels carried in .whl/ (e.g. imageio-ffmpeg
# for the video step) are installed into a temporary folder first. The run stops itself within
# its budget (--budget, 450 s on the GPU) and exits 1 when a step failed or timed out.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    # Here the system python3 may lack torch: a smoke run falls back to the project's venv.
    if [ "${CPU_SMOKE:-0}" = 1 ] && ! python3 -c "import torch" 2>/dev/null && [ -x .venv/bin/python ]; then
        PYTHON=.venv/bin/python
    fi
fi

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d /tmp/dcmp-gpu-check-site.XXXXXX)
    trap 'rm -rf "$site"' EXIT
    if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        echo "installed carried wheels: $(cd .whl && echo *.whl)"
    else
        echo "could not install the wheels in .whl/; going on without them"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# Deterministic cuBLAS for the exact-resume checks; must be set before CUDA starts in each process.
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}

mode=()
if [ "${CPU_SMOKE:-0}" = 1 ]; then
    mode=(--smoke)
fi
"$PYTHON" benchmarks/gpu_check.py --out "$OUT" --python "$PYTHON" "${mode[@]}" "$@"
