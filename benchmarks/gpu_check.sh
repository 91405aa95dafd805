#!/usr/bin/env bash
# The one call for a lent GPU machine, run from the repository root: the CUDA tests, benchmarks/gpu.py
# (1,000,000 backed cells), the step time by batch size (eager and CUDA graph), and with DEN_GPU_SUITE=1
# the whole test suite with device="auto" (the GPU). That machine's python3 has torch but not den's other
# dependencies: first, on this machine,
#     bash benchmarks/gpu_check.sh --download     # the wheels of benchmarks/gpu_wheels.txt into .whl/
# then run it there with .whl carried along. Each step has its own time limit, so the call ends inside
# the machine's 10 minutes; logs go to $OUT. `gpu_check.sh images [images.py options]` runs the image
# benchmark instead (carry the Fashion-MNIST cache too and point DEN_BENCH_CACHE at it).
set -u
if [ "${1:-}" = "--download" ]; then
    exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
fi
OUT=${OUT:-/tmp/den-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site:$PWD/benchmarks PYTHONUNBUFFERED=1 MPLBACKEND=agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, numpy, pandas, scanpy, anndata, shap, os; print('torch', torch.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__, 'scanpy', scanpy.__version__, 'anndata', anndata.__version__, 'shap', shap.__version__, 'cpus', os.cpu_count())"
if [ "${1:-}" = "images" ]; then  # the image benchmark's den rows on the GPU (Fashion-MNIST carried, DEN_BENCH_CACHE)
    shift
    (cd benchmarks && timeout "${DEN_IMAGES_TIMEOUT:-500}" python3 images.py --skip-semi "$@" 2>&1) | tee "$OUT/images.log" | grep -v "^JSON"
    exit 0
fi
echo "== CUDA tests"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_graphs.py tests/test_runner.py 2>&1 | tee "$OUT/test_gpu.log" | tail -25
echo "== 1,000,000 cells"
(cd benchmarks && timeout 400 python3 gpu.py --no-steps --workers 12 2>&1) | tee "$OUT/gpu.log" | grep -v "^JSON"
echo "== step time"
(cd benchmarks && timeout 45 python3 gpu.py --steps-only 2>&1) | tee "$OUT/steps.log" | grep -v "^JSON"
if [ "${DEN_GPU_SUITE:-0}" = "1" ]; then  # the whole suite does not fit in one call beside the steps above
    echo "== whole suite, device auto = the GPU"
    timeout 95 python3 -m pytest -q -rfE -n 12 -p no:cacheprovider -p no:benchmark tests 2>&1 | tee "$OUT/suite.log" | tail -40
fi
