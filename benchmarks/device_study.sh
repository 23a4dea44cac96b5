#!/usr/bin/env bash
# The whole-study benchmark on a lent GPU machine (the `device` tool), results under $OUT. Not used by CI.
#
#   device run, from the repository root:  bash benchmarks/device_study.sh
#
# The machine has python3 with a CUDA torch but not this project's other dependencies and no internet: carry a
# wheelhouse for its Python (here: `pip download --only-binary=:all: --python-version 3.12 -d wheels -e .` for the
# runtime dependencies, then `carry: ["wheels"]`), or point WHEELS at one already there. What it reports, like
# bench_study.py on the CPU: per-stage seconds of a 256 x 256 x 200 CT-MRI phantom study (one, then a batch of 4 with
# a byte-comparison of two runs, then the 21 deg / 20 mm start), TRE, and the fusion stage alone (bench_volume.py).
set -euo pipefail
OUT=${OUT:-/tmp/device_out}
WHEELS=${WHEELS:-wheels}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
if [ -d "$WHEELS" ]; then
    python3 -m pip install -q --no-index --find-links "$WHEELS" -e . > "$OUT/install.log" 2>&1
fi
python3 -c "import torch, monai, SimpleITK, itk; print(torch.__version__, torch.cuda.get_device_name(0))" \
    | tee "$OUT/versions.txt"
run() { echo "\$ $*" | tee -a "$OUT/study_gpu.md"; "$@" 2>>"$OUT/stderr.log" | tee -a "$OUT/study_gpu.md"; }
run python3 benchmarks/bench_volume.py --shapes 256x256x200 --slice-batch-sizes 8 32 --device cuda
run python3 benchmarks/bench_study.py --bundle ct_mri --device cuda --phantom 256x256x200 --studies 1
run python3 benchmarks/bench_study.py --bundle ct_mri --device cuda --phantom 256x256x200 --studies 4 --repeat
run python3 benchmarks/bench_study.py --bundle ct_mri --device cuda --phantom 256x256x200 --studies 1 --start 21deg
