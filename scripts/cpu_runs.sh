#!/usr/bin/env bash
# Long training runs on this project's 2-core CPU, as background jobs planned across working sessions. A PLAN is a
# set of runs that share the CPU fairly: all at once, one thread each, under `nice -n 19` (and a nice-19 autogroup),
# so that interactive work (the studio, tests) comes first and the runs share whatever it leaves in equal parts.
# Each run logs its own CPU-hours (log.csv: cpu_hours) and saves its resumable state (models, optimisers, RNG, data
# order, best so far) every SAVE_MINUTES (default 10) and at every evaluation: a lost process loses at most that much.
#
#   scripts/cpu_runs.sh PLAN [WORK_DIR]          # start, or resume after an interruption (the same command)
#   scripts/cpu_runs.sh PLAN [WORK_DIR] status   # where each run stands (last validation, progress)
#   scripts/cpu_runs.sh PLAN [WORK_DIR] stop     # end the runs (each resumes from its last save)
#   ONLY="size1x" scripts/cpu_runs.sh curves    # start (or, with stop, end) some of a plan's runs only
#
# Plans:
#   adversarial  v5's adversarial fine-tuning of the three waveform models from the shipped checkpoints (also
#                scripts/adversarial_cpu.sh): LSGAN + feature matching against a multi-resolution STFT discriminator,
#                --select guarded (least pause buzz among checkpoints whose val ESTOI and speech WER have not
#                regressed); the MOS predictor is never part of training or selection.
#   curves       the intelligibility diagnosis: naturall2s's speech stage from the shipped lip reader's front end
#                (frozen, cached features) at today's size (4.3M speech parameters) and with a 2x wider generator
#                and heads (8.5M), 10x the v4 recipe's steps (24000 x 16 clips), scoring val and the same 200
#                training clips every 600 steps (--eval-train).
#   retrieval    the retrieval prior against its control: the shipped naturall2s fine-tuned 1000 steps with the
#                real log-mel retrieved from the training speaker's frames as an extra input (`retrieval_prior`),
#                and the same fine-tune without it.
#   joint        the frozen-feature question of the intelligibility diagnosis: the retrieval plan's `control` (the
#                shipped naturall2s, 800 steps of its speech stage on frozen, cached features, 1 s crops x 16) against
#                the same fine-tune with the front end trained too (`--no-freeze-frontend`, so whole clips: 6 x 3 s,
#                about the same audio per step), same rate, losses and validations (val + 200 train clips / 200 steps).
#                `augmented` continues `unfrozen` from its best (step 800) for 1600 more steps with the video
#                augmented (--augment: crop shift, contrast, a masked span) at half the rate, a fresh cosine: the
#                curves show a fit limited by generalisation (train ESTOI keeps rising, val flat), not by steps.
#                Start it alone once `unfrozen` is done: ONLY=augmented scripts/cpu_runs.sh joint
#                `adversarial` gives a joint fine-tune back the naturalness its plain losses take away (on `val`,
#                `unfrozen` had MOS 2.85 and pause buzz 10.8 dB against v5's 3.25 and 4.8): v5's adversarial stage
#                (frozen front end, 1 s crops x 8, LSGAN + feature matching vs MRD, --select guarded) from
#                ADV_INIT (default: `unfrozen`'s best), its discriminators warm from v5's, ADV_STEPS (1000) steps;
#                `adversarial-stoi40` the same with twice the ESTOI loss (`adversarial` gave back the joint gain).
#                `unfrozen`, the adversarial runs and `student` ran from the then-shipped v5 (they made v6; v5 is
#                `git show 5675caa:checkpoints/naturall2s.safetensors`, its discriminators likewise).
#                `adv-unfrozen` (2026-12-07, from the shipped v6 and its discriminators): both at once, the front
#                end trained on whole clips (6 x 3 s, lr 1e-4) WITH the adversarial losses and `stoi/neg` 40, so that
#                the joint stage's ESTOI gain need not be given back to naturalness afterwards; --select intelligible
#                (the highest val ESTOI among checkpoints whose pause buzz rose < 1 dB and speech WER < 0.03 from v6's).
#                A v7 candidate (2026-12-07; measured, not shipped: it returned v6, docs/results.md): v6's recipe
#                again from the shipped v6, in a work folder of its own whose cache/ links to the shared one: ONLY=unfrozen scripts/cpu_runs.sh joint ../naturall2s-work/v7,
#                then ONLY=adversarial-stoi40 with the same folder (ADV_INIT defaults to that folder's unfrozen run).
#                `judge-robust`, then `content` and `content-control` (2026-12-07, late; measured, not shipped:
#                docs/results.md): a content judge trained adversarially on real log-mels, then v6's adversarial stage
#                again from the shipped v6 with its content/ce loss (weight 2) and without, 600 steps each.
#                `long` (2026-12-08): the "scale on the CPU" design as one multi-session run: the shipped v6 with its
#                front end trained on whole clips AND the video augmented, 7.5x `unfrozen`'s steps (LONG_STEPS,
#                6000 x 6 clips, lr 1e-4, a fresh cosine; validated and selected on the moving average of its
#                weights, --ema 0.998, from step 400 on), val + 200 train clips every 200 steps; then the adversarial
#                stage from its best in a folder of its own whose cache/ links to the shared one
#                (ADV_INIT=WORK/runs/joint/long/best.safetensors ONLY=adversarial-stoi40 scripts/cpu_runs.sh joint
#                ../naturall2s-work/long-adv). An early look at that stage, from `long`'s step 1400 (a copy of its
#                best.safetensors then): ADV_INIT=../naturall2s-work/long-adv-early/long-step1400.safetensors
#                ONLY=adversarial-stoi40 scripts/cpu_runs.sh joint ../naturall2s-work/long-adv-early
#                `long-control`: the same without the video augmentation (the EMA from step 0), beside it on the
#                other core, so that the two tell length from augmentation.
#                `student`: the live student of that front end (the adversarial stage keeps it frozen, so one student
#                serves every checkpoint of the run): train --stage live, twice the shipped student's 1250 steps.
#   units        the units variant (Choi, Kim & Ro, Interspeech 2023, at CPU scale) to a shipped-quality checkpoint,
#                its stages IN ORDER as one background job (CHAIN below; each resumable, a finished one returns at
#                once): `vocoder` (fits the 200 speech units, k-means over MFCC + deltas of the training split, and
#                fine-tunes the shipped cascade's vocoder with a unit input on real mels, degraded, + real units,
#                adversarially against its own MRD discriminator; 2000 steps x 8 clips), then `lipreader` (from that
#                run: front end + CTC, word, mel and unit heads, the vocoder fixed; 3000 x 8), both selected on val
#                ESTOI, then composed into WORK/runs/units/units.safetensors. Planned, not measured: about 2.6
#                CPU-hours from 1.85 and 1.65 CPU-s/step measured in 20-step runs (checkpoints/README.md).
#                Curves: python scripts/figure_runs.py units --table.
#   ltbs         the ltbs variant (Kim et al., "Let There Be Sound", AAAI 2024, at CPU scale) as one background job:
#                `synth` (variance adaptor, mel decoder and flow post-net on the shipped lip reader's frozen, cached
#                features, the shipped cascade's vocoder fixed inside the model; 1 s crops, LTBS_STEPS x 16, selected
#                on val ESTOI of the vocoded speech), then composed into WORK/runs/ltbs/ltbs.safetensors with the
#                post-net temperature LTBS_TEMPERATURE (default 0, chosen on val by `python scripts/postnet_ablation.py
#                WORK/runs/ltbs/ltbs.safetensors --split val`; another value: rerun the plan with it, the finished
#                stage returns at once, the composition is redone). Trained 2026-12-07 in 1.62 CPU-hours and shipped
#                (checkpoints/README.md). Curves: python scripts/figure_runs.py ltbs --table.
#   lipvoicer    the lipvoicer variant (Yemini et al., ICLR 2024, at CPU scale) IN ORDER as one background job: `judge`
#                (the content judge on the training split's real log-mels, 2000 x 32 one-second crops), then `flow`
#                (the flow-matching denoiser on the shipped lip reader's frozen, cached features, that judge inside
#                the model to guide the sampling, the shipped cascade's vocoder; 1 s crops, FLOW_STEPS x 16, selected
#                on val ESTOI of the sampled speech), then `judge-robust` (that judge fine-tuned on the flow's own
#                clean estimates, adversarially with --judge-robust JUDGE_ROBUST (default 0.5): the judge that
#                guides; 2000 x 16, selected on its val word accuracy), then composed into
#                WORK/runs/lipvoicer/lipvoicer.safetensors with that judge and the sampling defaults LIPVOICER_STEPS /
#                LIPVOICER_GUIDANCE (default 2 / 0.15, chosen on val by `python scripts/sampling_ablation.py
#                WORK/runs/lipvoicer/lipvoicer.safetensors --split val`; other values: rerun the plan with them, the
#                finished stages return at once, the composition is redone). Trained 2026-12-07 in 1.71 CPU-hours
#                (FLOW_STEPS 12000) and shipped; its robust judge 2026-12-07 in 0.16 CPU-hours (checkpoints/README.md).
#                Curves: python scripts/figure_runs.py lipvoicer --table.
set -euo pipefail
cd "$(dirname "$0")/.."
PLANS="adversarial|curves|retrieval|joint|units|ltbs|lipvoicer"
PLAN=${1:?usage: scripts/cpu_runs.sh $PLANS [WORK_DIR] [start|status|stop]}
shift
case "${1:-}" in status|stop|chain) ACTION=$1; WORK=${2:-../naturall2s-work} ;;
  *) WORK=${1:-../naturall2s-work}; ACTION=${2:-start} ;; esac
PY=${PY:-.venv/bin/python}
CACHE=$WORK/cache/grid
SAVE_MINUTES=${SAVE_MINUTES:-10}
declare -A ARGS
CHAIN=()  # a plan whose runs go one after the other (in this order, one job) instead of all at once
THEN=""  # the command (train flags) a chain ends with
NATURALL2S_ARCH='"word_head":true,"feature_dropout":0.3,"f0_grad_scale":0.01,"prior_free_phase":true,"f0_bins":180'
NATURALL2S_SYNTH="--variant naturall2s --stage synth --freeze-frontend --feature-noise 0.3"  # its recipe's speech stage
case "$PLAN" in
  adversarial)
    RUNS=$WORK/runs/adversarial
    ARGS=(
      [naturall2s]="$NATURALL2S_SYNTH --arch {$NATURALL2S_ARCH}
        --lambdas {\"f0/l1\":0,\"stoi/neg\":20,\"adv/gen\":0.5,\"adv/feat\":1}"
      [naturall2s-noddsp]='--variant naturall2s-noddsp --stage synth --freeze-frontend --arch {"word_head":true}
        --lambdas {"stoi/neg":20,"adv/gen":0.5,"adv/feat":1}'
      [mel-vocoder]='--variant mel-vocoder --stage vocoder --arch {"word_head":true}
        --lambdas {"stoi/neg":10,"adv/gen":0.5,"adv/feat":1}'
    )
    for v in "${!ARGS[@]}"; do ARGS[$v]+=" --init checkpoints/$v.safetensors"; done
    COMMON=(--segment-frames 25 --batch-size 8 --lr 1e-4 --lr-disc 2e-4 --warmup 50 --adv-start 0 --disc mrd
            --select guarded --eval-every 200 --steps "${STEPS:-2000}")
    ;;
  curves)
    RUNS=$WORK/runs/curves
    SYN="$NATURALL2S_SYNTH --init checkpoints/mel-gl.safetensors --lambdas {\"f0/l1\":0}"
    ARGS=(
      [size1x]="$SYN --arch {$NATURALL2S_ARCH}"
      [size2x]="$SYN --arch {$NATURALL2S_ARCH,\"head_hidden\":384,\"gen_dim\":384,\"gen_intermediate_dim\":768}"
    )
    COMMON=(--segment-frames 25 --batch-size 16 --lr 5e-4 --warmup 100 --adv-start -1 --eval-every 600
            --eval-train 200 --steps "${STEPS:-24000}")
    ;;
  retrieval)
    RUNS=$WORK/runs/retrieval
    FT="$NATURALL2S_SYNTH --init checkpoints/naturall2s.safetensors --lambdas {\"f0/l1\":0,\"stoi/neg\":20}"
    ARGS=(
      [prior]="$FT --arch {$NATURALL2S_ARCH,\"retrieval_prior\":true}"
      [control]="$FT --arch {$NATURALL2S_ARCH}"
    )
    COMMON=(--segment-frames 25 --batch-size 16 --lr 2e-4 --warmup 50 --adv-start -1 --eval-every 200
            --eval-train 200 --steps "${STEPS:-1000}")
    ;;
  joint)
    RUNS=$WORK/runs/joint
    JOINT="$NATURALL2S_SYNTH --no-freeze-frontend --arch {$NATURALL2S_ARCH} --lambdas {\"f0/l1\":0,\"stoi/neg\":20}
      --segment-frames 0 --batch-size 6 --warmup 50 --adv-start -1 --eval-train 200"
    ADV_STAGE="$NATURALL2S_SYNTH --arch {$NATURALL2S_ARCH} --disc mrd
      --init-disc checkpoints/discriminators/naturall2s.safetensors --segment-frames 25 --batch-size 8 --lr 1e-4
      --lr-disc 2e-4 --warmup 50 --adv-start 0"
    ADV="$ADV_STAGE --init ${ADV_INIT:-$RUNS/unfrozen/best.safetensors} --select guarded --steps ${ADV_STEPS:-1000}"
    # the content runs: v6's adversarial stage again from the shipped v6, with and without the content loss of an
    # adversarially trained judge (judge-robust first, alone; then ONLY="content content-control")
    ADV_V6="$ADV_STAGE --init checkpoints/naturall2s.safetensors --select intelligible --steps ${CONTENT_STEPS:-600}"
    LONG="$JOINT --init checkpoints/naturall2s.safetensors --lr 1e-4 --ema 0.998 --steps ${LONG_STEPS:-6000}"
    ARGS=(
      [unfrozen]="$JOINT --init checkpoints/naturall2s.safetensors --lr 2e-4 --steps ${STEPS:-800}"
      [augmented]="$JOINT --init $RUNS/unfrozen/best.safetensors --augment --lr 1e-4 --steps ${AUG_STEPS:-1600}"
      [long]="$LONG --augment"
      [long-control]="$LONG"
      [adversarial]="$ADV --lambdas {\"f0/l1\":0,\"stoi/neg\":20,\"adv/gen\":0.5,\"adv/feat\":1}"
      [adversarial-stoi40]="$ADV --lambdas {\"f0/l1\":0,\"stoi/neg\":40,\"adv/gen\":0.5,\"adv/feat\":1}"
      [adv-unfrozen]="$NATURALL2S_SYNTH --no-freeze-frontend --arch {$NATURALL2S_ARCH}
        --init checkpoints/naturall2s.safetensors --disc mrd --init-disc checkpoints/discriminators/naturall2s.safetensors
        --segment-frames 0 --batch-size 6 --lr 1e-4 --lr-disc 2e-4 --warmup 50 --adv-start 0 --select intelligible
        --lambdas {\"f0/l1\":0,\"stoi/neg\":40,\"adv/gen\":0.5,\"adv/feat\":1} --steps ${AU_STEPS:-2400}"
      [student]="--variant naturall2s --stage live --init ${ADV_INIT:-$RUNS/unfrozen/best.safetensors} --steps 2500
        --batch-size 32 --lr 3e-4 --warmup 60 --weight-decay 0"
      [judge-robust]="--stage judge --judge-robust 0.5 --segment-frames 25 --batch-size 32 --lr 1e-3 --warmup 100
        --steps 2000"
      [content]="$ADV_V6 --judge $RUNS/judge-robust/best.safetensors
        --lambdas {\"f0/l1\":0,\"stoi/neg\":40,\"adv/gen\":0.5,\"adv/feat\":1,\"content/ce\":2}"
      [content-control]="$ADV_V6 --lambdas {\"f0/l1\":0,\"stoi/neg\":40,\"adv/gen\":0.5,\"adv/feat\":1}"
    )
    COMMON=(--eval-every 200)
    ;;
  units)
    RUNS=$WORK/runs/units
    UNITS_ARCH='{"word_head":true,"n_units":200}'
    ARGS=(
      [vocoder]="--variant units --stage vocoder --arch $UNITS_ARCH --init checkpoints/mel-vocoder.safetensors
        --segment-frames 25 --degrade-mel --batch-size 8 --lr 1e-4 --warmup 50 --adv-start 0 --disc mrd
        --init-disc checkpoints/discriminators/mel-vocoder.safetensors --select estoi
        --lambdas {\"stoi/neg\":10,\"adv/gen\":0.5,\"adv/feat\":1} --steps ${VOC_STEPS:-2000}"
      [lipreader]="--variant units --stage lipreader --arch $UNITS_ARCH --init $RUNS/vocoder/best.safetensors
        --augment --batch-size 8 --lr 3e-4 --warmup 50 --select estoi --steps ${LIP_STEPS:-3000}"
    )
    CHAIN=(vocoder lipreader)
    THEN="--variant units --stage lipreader --steps 0 --arch $UNITS_ARCH --run-dir $RUNS/composed
      --init $RUNS/vocoder/best.safetensors,$RUNS/lipreader/best.safetensors --export $RUNS/units.safetensors"
    COMMON=(--eval-every 200)
    ;;
  ltbs)
    RUNS=$WORK/runs/ltbs
    ARGS=(
      [synth]="--variant ltbs --stage synth --arch {\"word_head\":true} --freeze-frontend
        --init checkpoints/mel-gl.safetensors,checkpoints/mel-vocoder.safetensors --segment-frames 25
        --batch-size 16 --lr 5e-4 --warmup 100 --adv-start -1 --select estoi --steps ${LTBS_STEPS:-8000}"
    )
    CHAIN=(synth)
    THEN="--variant ltbs --stage synth --steps 0 --run-dir $RUNS/composed
      --arch {\"word_head\":true,\"ltbs\":{\"postnet_temperature\":${LTBS_TEMPERATURE:-0}}}
      --init $RUNS/synth/best.safetensors,checkpoints/mel-vocoder.safetensors --export $RUNS/ltbs.safetensors"
    COMMON=(--eval-every 400)
    ;;
  lipvoicer)
    RUNS=$WORK/runs/lipvoicer
    ARGS=(
      [judge]="--stage judge --segment-frames 25 --batch-size 32 --lr 1e-3 --warmup 100 --eval-every 500
        --steps ${JUDGE_STEPS:-2000}"
      [flow]="--variant lipvoicer --stage flow --init checkpoints/mel-gl.safetensors,checkpoints/mel-vocoder.safetensors
        --judge $RUNS/judge/best.safetensors --segment-frames 25 --batch-size 16 --lr 5e-4 --warmup 200
        --select estoi --eval-every 2000 --steps ${FLOW_STEPS:-12000}"
      [judge-robust]="--stage judge --judge-flow $RUNS/flow/best.safetensors --judge-robust ${JUDGE_ROBUST:-0.5}
        --segment-frames 25 --batch-size 16 --lr 3e-4 --warmup 50 --eval-every 250 --steps ${ROBUST_STEPS:-2000}"
    )
    CHAIN=(judge flow judge-robust)
    THEN="--variant lipvoicer --stage flow --steps 0 --run-dir $RUNS/composed
      --arch {\"sampling_steps\":${LIPVOICER_STEPS:-2},\"guidance_scale\":${LIPVOICER_GUIDANCE:-0.15}}
      --init $RUNS/flow/best.safetensors,checkpoints/mel-vocoder.safetensors --judge $RUNS/judge-robust/best.safetensors
      --export $RUNS/lipvoicer.safetensors"
    COMMON=()
    ;;
  *) echo "unknown plan $PLAN (adversarial, curves, retrieval, joint, units, ltbs or lipvoicer)" >&2; exit 2 ;;
esac
COMMON+=(--cache "$CACHE" --save-minutes "$SAVE_MINUTES" --threads 1 --device cpu)
mkdir -p "$RUNS"

if [ "$ACTION" = status ]; then
  for v in "${!ARGS[@]}"; do
    echo "== $v"; grep ',val,' "$RUNS/$v/log.csv" 2>/dev/null | tail -2 | cut -c1-400 || echo "not started"
    tail -c 400 "$RUNS/$v.log" 2>/dev/null | tr '\r' '\n' | tail -1; echo
  done
  exit 0
fi
if [ "$ACTION" = stop ]; then
  # a chain's job ends with its running stage (set -e), before the next one starts
  for v in ${ONLY:-"${!ARGS[@]}"}; do pkill -f -- "--run-dir $RUNS/$v( |$)" && echo "$v: stopped" || true; done
  exit 0
fi
if [ "$ACTION" = chain ]; then  # the background job of a chained plan: its stages in order, then THEN
  for v in "${CHAIN[@]}"; do
    echo "$(date -Is) $v"
    # shellcheck disable=SC2086  # ARGS holds several flags
    "$PY" -m naturall2s train ${ARGS[$v]} "${COMMON[@]}" --run-dir "$RUNS/$v" >> "$RUNS/$v.log" 2>&1
  done
  # shellcheck disable=SC2086
  "$PY" -m naturall2s train $THEN
  echo "$(date -Is) done"
  exit 0
fi
if [ ${#CHAIN[@]} -gt 0 ]; then
  if pgrep -f -- "cpu_runs.sh $PLAN .*chain" >/dev/null; then echo "$PLAN: already running"; exit 0; fi
  nohup setsid bash -c 'echo 19 > /proc/self/autogroup 2>/dev/null; exec nice -n 19 "$@"' _ \
    bash scripts/cpu_runs.sh "$PLAN" "$WORK" chain >> "$RUNS/chain.log" 2>&1 &
  echo "$PLAN: started (pid $!): ${CHAIN[*]} in order, log $RUNS/chain.log and $RUNS/<stage>.log"
  exit 0
fi

for v in ${ONLY:-"${!ARGS[@]}"}; do
  if pgrep -f -- "--run-dir $RUNS/$v( |$)" >/dev/null; then echo "$v: already running"; continue; fi
  # Linux shares the CPU between sessions (autogroups) before `nice` counts within one: each run gets a session of
  # its own whose group nice is 19 too, so an interactive session (the studio, tests) comes first
  # shellcheck disable=SC2086  # ARGS holds several flags
  nohup setsid bash -c 'echo 19 > /proc/self/autogroup 2>/dev/null; exec nice -n 19 "$@"' _ \
    "$PY" -m naturall2s train ${ARGS[$v]} "${COMMON[@]}" --run-dir "$RUNS/$v" >> "$RUNS/$v.log" 2>&1 &
  echo "$v: started (pid $!), log $RUNS/$v.log"
done
