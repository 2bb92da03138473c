#!/usr/bin/env bash
# The GPU benchmark on a CUDA machine without network: install the wheels that `make bench-gpu-wheels`
# downloaded into .gpu-wheels (copied there with the checkout), then run benchmarks/gpu.py with any arguments
# given. Where $OUT names a folder, the JSON and the log are written there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=${GPU_WHEELS:-.gpu-wheels}
missing=$("$python" -c "import importlib.util as u
print(*(m for m in ('diffusers', 'open_clip', 'pytorch_fid', 'jsonschema', 'ftfy') if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "missing: $missing; no wheels in $wheels: run 'make bench-gpu-wheels' and carry $wheels" >&2
        exit 2
    fi
    site=$(mktemp -d /tmp/datadream-wheels.XXXXXX)
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
results=benchmarks/results-gpu.json
log=/dev/null
if [ -n "${OUT:-}" ]; then
    results=$OUT/results-gpu.json
    log=$OUT/gpu-bench.log
fi
PYTHONUNBUFFERED=1 "$python" benchmarks/gpu.py --out "$results" "$@" 2>&1 | tee "$log"
