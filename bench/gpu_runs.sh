#!/usr/bin/env bash
# The GPU figures behind bench/RESULTS.md and falsification/results/, one part per invocation:
#   bench/gpu_runs.sh OUT battery      the whole battery on CUDA -> OUT/junit-cuda.{xml,json}
#   bench/gpu_runs.sh OUT verify       the battery, then every registered fault's mutant on CUDA -> OUT/mutants-cuda.json
#   bench/gpu_runs.sh OUT bench MB...  trainer step vs the plain-PyTorch peer at each micro-batch
#   bench/gpu_runs.sh OUT memory MB    step memory at micro-batch MB: Hugging Face + Liger-Kernel, the mixed
#                                      stack at recomputation budgets 1.0 and 0.8 and with each of AOTAutograd's
#                                      three recomputation bans lifted alone, Liger again
#   bench/gpu_runs.sh OUT partition MB what the compiled step saves for backward at micro-batch MB: the saved
#                                      tensors of one block, then Liger, the mixed stack compiled per block
#                                      and per step, each at budget 1.0, 0.8 and materialized_backward lifted
#   bench/gpu_runs.sh OUT recompute MB step memory at micro-batch MB with the backward recomputing each block's
#                                      elementwise results (albor.recompute): Liger, the mixed stack at budget
#                                      1.0 and with recompute rmsnorm+swiglu, swiglu and rmsnorm, Liger again
#   bench/gpu_runs.sh OUT run          a short 350M run, killed with SIGKILL at step 150 and resumed
#   bench/gpu_runs.sh OUT fsdp         FSDP2 on one GPU against the unsharded step, and the async save's pause
#   bench/gpu_runs.sh OUT sweep OPT LR...  the speedrun's 125M job (no kill) with optimizer OPT at each lr
# The corpus is this machine's stdlib + installed distributions, capped at 100 MB of source.
set -euo pipefail
OUT=${1:?usage: gpu_runs.sh OUT battery|verify|bench|memory|partition|recompute|run|fsdp|sweep}
PART=${2:?usage: gpu_runs.sh OUT battery|verify|bench|memory|partition|recompute|run|fsdp|sweep}
shift 2
export PYTHONUNBUFFERED=1
XDIST=(-n 12 --dist loadfile)
DATA=(data.out=.cache/data-350m data.max_source_bytes=100000000)
prepare() {
  python -c 'import sys
from albor.data import prepare_config
from albor.train.config import load_config
prepare_config(load_config("pretrain-350m", sys.argv[1:]).data)' "${DATA[@]}"
}
liger() {  # Hugging Face + Liger-Kernel at micro-batch $1; Albor's side still runs if the peer fails
  # The peer needs the liger_kernel package on the path; the file is ../shared/bench's.
  python ../shared/bench/peer_hf_llama.py --liger --compile no --micro-bs "$1" --steps 20 | tee -a "$OUT/liger.txt" \
    || echo "liger peer: exit $?"
}
case $PART in
  battery)
    # Installed (its dependencies are on the path already), as a user's preflight finds it: TRAIN-031 checks
    # what an install's core dependencies collect.
    python -m pip install -q --no-deps --no-build-isolation -e . || echo "albor not installed: TRAIN-031 skips"
    # The sandbox's hostile programs are CPU-tier tests; they run in CI, not on a shared GPU host. One test
    # file per pytest-xdist worker: the whole battery takes over ten minutes in one process.
    python -m albor battery --all --out "$OUT" -- --ignore=falsification/test_sandbox.py "${XDIST[@]}" ;;
  verify)
    python -m albor battery --all --out "$OUT" -- --ignore=falsification/test_sandbox.py "${XDIST[@]}" \
      || echo "battery: exit $?"
    python -m albor mutants --json "$OUT/mutants-cuda.json" ;;
  bench)
    prepare
    python bench/throughput.py --micro-bs "$@" --budget 0.5 --steps 20 --warmup 6 --out "$OUT/throughput.jsonl" "${DATA[@]}" ;;
  memory)
    MB=${1:?usage: gpu_runs.sh OUT memory MB}
    liger "$MB"
    prepare
    python bench/throughput.py --micro-bs "$MB" --kernels mixed --budget 0.8 --steps 20 --warmup 6 \
      --lift used_far_apart long_fusible_chains materialized_backward \
      --out "$OUT/memory.jsonl" "${DATA[@]}"
    liger "$MB"  # again after Albor's runs, so that the host's drift within the call shows
    ;;
  partition)
    MB=${1:?usage: gpu_runs.sh OUT partition MB}
    python bench/saved_tensors.py --micro-bs "$MB" --out "$OUT/saved.jsonl"
    liger "$MB"
    prepare
    STEP=(--micro-bs "$MB" --kernels mixed --steps 20 --warmup 6)
    python bench/throughput.py "${DATA[@]}" compile_scope=block "${STEP[@]}" --budget 0.8 \
      --lift materialized_backward --out "$OUT/block.jsonl"
    python bench/throughput.py "${DATA[@]}" "${STEP[@]}" --budget 0.8 --lift materialized_backward \
      --out "$OUT/step.jsonl" ;;
  recompute)
    MB=${1:?usage: gpu_runs.sh OUT recompute MB}
    liger "$MB"
    prepare
    python bench/throughput.py --micro-bs "$MB" --kernels mixed --recompute rmsnorm,swiglu swiglu rmsnorm \
      --steps 20 --warmup 6 --out "$OUT/recompute.jsonl" "${DATA[@]}"
    liger "$MB" ;;
  run)
    prepare
    RUN=(--config pretrain-350m --name gpu-350m "${DATA[@]}" optim.max_steps=300 optim.warmup_steps=50
         micro_batch=16 eval_every=100 eval_windows=64 checkpoint_every=50 runs_dir=.cache/runs)
    # Preflight is off here only because the sandbox's hostile programs stay off shared GPU hosts; the
    # battery part runs the CUDA tier on the same machine first.
    RUN+=(--preflight off)
    ALBOR_CRASH_AT=step:150 python -m albor.train "${RUN[@]}" || echo "killed: exit $?"
    python -m albor.train "${RUN[@]}" --resume
    mkdir -p "$OUT/gpu-350m"
    cp .cache/runs/gpu-350m/{config.yaml,metrics.jsonl,preflight.json,run.json,summary.json} "$OUT/gpu-350m/"
    ls .cache/runs/gpu-350m/checkpoints > "$OUT/gpu-350m/checkpoints.txt" ;;
  fsdp)
    prepare
    python bench/fsdp.py --micro-bs 16 "${DATA[@]}" | tee "$OUT/fsdp.jsonl" ;;
  sweep)
    # The speedrun's data and schedule (bench/speedrun.py), min_lr a tenth of each lr, one run per lr.
    OPT=${1:?usage: gpu_runs.sh OUT sweep OPT LR...}
    shift
    SPD=(vocab_size=32768 seq_len=1024 max_source_bytes=null fim_rate=0 tokenizer_sample_bytes=100000000)
    python -m albor data prepare out=.cache/data-speedrun "${SPD[@]}"
    WINDOWS=$(python -c 'import sys; from pathlib import Path; from albor.data.packing import load_manifest
print(load_manifest(Path(sys.argv[1])).splits["val"].windows)' .cache/data-speedrun)
    for LR in "$@"; do
      MIN=$(python -c "print(float('$LR') / 10)")
      python -m albor train --config pretrain-125m --name "sweep-$OPT-$LR" --preflight off runs_dir=.cache/runs \
        data.out=.cache/data-speedrun "${SPD[@]/#/data.}" micro_batch=64 grad_accum=4 optim.name="$OPT" \
        optim.lr="$LR" optim.min_lr="$MIN" optim.warmup_steps=50 optim.max_steps=225 eval_every=75 \
        checkpoint_every=225 eval_windows="$WINDOWS" || echo "lr $LR: exit $?"
      mkdir -p "$OUT/sweep-$OPT-$LR"
      cp .cache/runs/"sweep-$OPT-$LR"/{config.yaml,metrics.jsonl} "$OUT/sweep-$OPT-$LR/" || true
    done ;;
  *) echo "unknown part $PART" >&2; exit 2 ;;
esac
