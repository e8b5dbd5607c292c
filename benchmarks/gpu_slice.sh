#!/usr/bin/env bash
# The GPU slice: what one GPU does with the paper's models, in about 8 minutes on an H100.
#   1. `symattn bench` of the pre-training step at small and base size (batch 64 x 512, bf16
#      autocast), each attention variant beside HF BERT (SDPA: its flash kernel where it applies),
#      eager and under torch.compile: tokens/s, MFU, peak memory (bench-<size>-<mode>.csv);
#   2. 1,000 steps of the paper-small cell of each variant from the streaming token store, as real
#      runs (benchmarks/train_slice.py): tokens/s, MFU against the GPU's bf16 peak, peak memory
#      (train_slice.csv).
# usage: benchmarks/gpu_slice.sh OUT_DIR [--tiny] [--slice DIR]
#   --tiny   the same commands at tiny size on the CPU, fp32, eager (what the test runs)
#   --slice  FineWeb-Edu Parquet files for step 2 (default: the offline pypi-news corpus)
# Needs the installed project (.venv) and a data cache that holds BERT's vocabulary and the corpus
# ($SYMATTN_CACHE), since a GPU node may have no network.
set -euo pipefail
out=${1:?usage: benchmarks/gpu_slice.sh OUT_DIR [--tiny] [--slice DIR]}
shift
tiny=0 slice=()
while [ $# -gt 0 ]; do
  case $1 in
    --tiny) tiny=1 ;;
    --slice) slice=(--slice "$2"); shift ;;
    *) echo "gpu_slice.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
if [ "$tiny" = 1 ]; then
  sizes=tiny device=cpu precision=fp32 batch=4 seq=64 rounds=1 steps=20 modes=eager train=(--tiny --batch 4 --seq-len 64)
else
  sizes="small base" device=cuda precision=bf16 batch=64 seq=512 rounds=3 steps=1000 modes="eager compile" train=()
fi
for size in $sizes; do
  for mode in $modes; do
    flag=(); [ "$mode" = compile ] && flag=(--compile)
    "$py" -m symattn bench --size "$size" --phases pretrain --batch "$batch" --seq-len "$seq" \
      --precision "$precision" --device "$device" --rounds "$rounds" "${flag[@]}" \
      --csv "$out/bench-$size-$mode.csv"
  done
done
"$py" benchmarks/train_slice.py --out "$out" --steps "$steps" "${train[@]}" "${slice[@]}"
echo "gpu_slice: CSVs in $out"
