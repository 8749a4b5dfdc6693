#!/usr/bin/env bash
# v5's adversarial fine-tuning of the three waveform models, as background CPU jobs: the `adversarial` plan of
# scripts/cpu_runs.sh (see there).   scripts/adversarial_cpu.sh [WORK_DIR] [start|status|stop]
exec "$(dirname "$0")/cpu_runs.sh" adversarial "$@"
