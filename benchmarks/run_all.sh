#!/usr/bin/env bash
# Every benchmark of the project on the machine it runs on, as Markdown tables in one folder.
#
#   bash benchmarks/run_all.sh [cpu|cuda] [output folder (default benchmarks/results/<device>)] [--no-study]
#
# CPU: a profile of one forward by network part, scan (forward, forward+backward), 2D fusion 256/512 x batch
# 1/8/32, scaling 128-1024, a 256x256x200 volume, registration time and accuracy for a 128x128x32 and a 256x256x200
# MRI, and the three medical bundles' sample studies end to end. CUDA adds bf16/fp16 autocast, sizes up to 2048, a
# 512x512x600 volume and, when mamba-ssm imports, the same runs with its kernel.
set -euo pipefail
device=${1:-cpu}
out=${2:-benchmarks/results/$device}
study=${3:-}
mkdir -p "$out"
py=${PYTHON:-python}
run() { echo "\$ $*" | tee -a "$out/commands.txt"; "$@"; }

run $py benchmarks/profile_fusion.py --device "$device" >"$out/profile.md"
run $py benchmarks/bench_scan.py --device "$device" --batch 1 8 >"$out/scan.md"
run $py benchmarks/bench_scan.py --device "$device" --batch 1 8 --backward >"$out/scan_backward.md"
if [ "$device" = cpu ]; then
    run $py benchmarks/bench_fusion.py --sizes 256 512 --batches 1 8 32 >"$out/fusion.md"
    run $py benchmarks/bench_fusion.py --sizes 128 256 384 512 768 1024 --batches 1 >"$out/scaling.md"
    run $py benchmarks/bench_volume.py --shapes 256x256x200 --slice-batch-sizes 8 >"$out/volume.md"
    run $py benchmarks/bench_registration.py --shapes 128x128x32 256x256x200 >"$out/registration.md"
else
    backends="torch"
    if $py -c "import sys; from fusionmamba_med.ops import mamba_ssm_available as a; sys.exit(not a())"; then
        backends="torch cuda"
    fi
    for b in $backends; do
        for amp in off bf16 fp16; do
            ampflag=(); [ "$amp" = off ] || ampflag=(--amp "$amp")
            run $py benchmarks/bench_fusion.py --device "$device" --scan-backend "$b" "${ampflag[@]}" \
                --sizes 256 512 --batches 1 8 32 --repeat 10 >"$out/fusion_${b}_${amp}.md"
        done
        run $py benchmarks/bench_fusion.py --device "$device" --scan-backend "$b" --repeat 10 \
            --sizes 128 256 512 1024 2048 --batches 1 >"$out/scaling_${b}.md"
        run $py benchmarks/bench_volume.py --device "$device" --scan-backend "$b" --shapes 256x256x200 512x512x600 \
            --slice-batch-sizes 8 32 >"$out/volume_${b}.md"
        run $py benchmarks/bench_volume.py --device "$device" --scan-backend "$b" --amp --shapes 256x256x200 \
            512x512x600 --slice-batch-sizes 32 >"$out/volume_${b}_bf16.md"
    done
fi
if [ "$study" != --no-study ]; then
    for bundle in ct_mri pet_mri spect_mri; do
        run $py benchmarks/bench_study.py --bundle "$bundle" --device "$device" --out "$out/study_$bundle.md" >/dev/null
    done
fi
echo "tables in $out"
