#!/usr/bin/env bash
# Adversarial fine-tuning of the shipped checkpoints on this project's 2-core CPU, as a long background job planned
# across working sessions. Every waveform model gets the same treatment, so the comparison stays fair:
#   naturall2s, naturall2s-noddsp: synth stage, frozen front end (cached features), 1 s crops, their recipe's losses
#     (ESTOI loss kept) + LSGAN and feature matching against the multi-resolution discriminator;
#   mel-vocoder: the cascade's vocoder on real mels (how such vocoders are normally trained), the same discriminator.
# The three runs go at once, one thread each, under `nice -n 19`: they share whatever CPU the machine's other work
# leaves, in equal parts (the shares), and each logs its own CPU-hours (log.csv: cpu_hours).
# Selection (--select guarded): the least pause buzz (comb dB, val) among checkpoints whose val ESTOI and speech WER
# have not regressed from the shipped model's; the MOS predictor is never part of training or selection.
#
#   scripts/adversarial_cpu.sh [WORK_DIR]        # start, or resume after an interruption (the same command)
#   scripts/adversarial_cpu.sh [WORK_DIR] status # where each run stands (last validation, progress); also `status [WORK_DIR]`
#   scripts/adversarial_cpu.sh [WORK_DIR] stop   # end the runs (each resumes from its last save); also `stop [WORK_DIR]`
#
# Each run saves its resumable state (models, optimisers, discriminator, RNG, data order, best so far) every
# SAVE_MINUTES (default 10) and at every evaluation: a lost process loses at most that much.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in status|stop) ACTION=$1; WORK=${2:-../naturall2s-work} ;;
  *) WORK=${1:-../naturall2s-work}; ACTION=${2:-start} ;; esac
PY=${PY:-.venv/bin/python}
CACHE=$WORK/cache/grid
RUNS=$WORK/runs/adversarial
STEPS=${STEPS:-2000}
mkdir -p "$RUNS"

declare -A ARGS=(
  [naturall2s]='--variant naturall2s --stage synth --freeze-frontend --feature-noise 0.3
    --arch {"word_head":true,"feature_dropout":0.3,"f0_grad_scale":0.01,"prior_free_phase":true,"f0_bins":180}
    --lambdas {"f0/l1":0,"stoi/neg":20,"adv/gen":0.5,"adv/feat":1}'
  [naturall2s-noddsp]='--variant naturall2s-noddsp --stage synth --freeze-frontend --arch {"word_head":true}
    --lambdas {"stoi/neg":20,"adv/gen":0.5,"adv/feat":1}'
  [mel-vocoder]='--variant mel-vocoder --stage vocoder --arch {"word_head":true}
    --lambdas {"stoi/neg":10,"adv/gen":0.5,"adv/feat":1}'
)
COMMON=(--cache "$CACHE" --segment-frames 25 --batch-size 8 --lr 1e-4 --lr-disc 2e-4 --warmup 50 --adv-start 0
        --disc mrd --select guarded --eval-every 200 --save-minutes 10 --threads 1 --device cpu)

if [ "$ACTION" = status ]; then
  for v in "${!ARGS[@]}"; do
    echo "== $v"; grep '"val"\|,val,' "$RUNS/$v/log.csv" 2>/dev/null | tail -2 | cut -c1-400 || echo "not started"
    tail -c 400 "$RUNS/$v.log" 2>/dev/null | tr '\r' '\n' | tail -1; echo
  done
  exit 0
fi
if [ "$ACTION" = stop ]; then
  for v in "${!ARGS[@]}"; do pkill -f -- "--run-dir $RUNS/$v( |$)" && echo "$v: stopped" || true; done
  exit 0
fi

for v in "${!ARGS[@]}"; do
  if pgrep -f -- "--run-dir $RUNS/$v( |$)" >/dev/null; then echo "$v: already running"; continue; fi
  # Linux shares the CPU between sessions (autogroups) before `nice` counts within one: each run gets a session of
  # its own whose group nice is 19 too, so an interactive session (the studio, tests) comes first
  # shellcheck disable=SC2086  # ARGS holds several flags
  nohup setsid bash -c 'echo 19 > /proc/self/autogroup 2>/dev/null; exec nice -n 19 "$@"' _ \
    "$PY" -m naturall2s train ${ARGS[$v]} "${COMMON[@]}" --steps "$STEPS" \
    --init "checkpoints/$v.safetensors" --run-dir "$RUNS/$v" >> "$RUNS/$v.log" 2>&1 &
  pid=$!
  echo "$v: started (pid $pid), log $RUNS/$v.log"
done
