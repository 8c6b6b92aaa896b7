#!/bin/bash
# The BMRS paper's Table 1 rows for one set-up: every criterion (and BMRS_N in
# the released code's convention) with SEEDS seeds vmapped, then the table
# beside the paper's values. Re-running resumes unfinished runs from their
# checkpoints and skips finished ones.
#
#   launch/bmrs_table1.sh bmrs_mlp_mnist 3 workdirs/bmrs_table1
#   launch/bmrs_table1.sh bmrs_lenet5_fashion_mnist 10 workdirs/bmrs_table1   # a GPU job
#
# Arguments: SETUP (configs/SETUP.py) SEEDS WORKDIR [extra --config.* overrides].
# Under SLURM: sbatch --gres=gpu:1 --wrap "launch/bmrs_table1.sh SETUP 10 DIR".
# Runs the Python of the active environment, or the one PYTHON names.
set -euo pipefail

SETUP=${1:?set-up, e.g. bmrs_mlp_mnist (configs/<set-up>.py)}
SEEDS=${2:?number of seeds}
WORKDIR=${3:?workdir}
shift 3
PYTHON=${PYTHON:-$(command -v python || command -v python3)}  # the active environment's, or $PYTHON

for criterion in none snr expected_theta bmrs_n bmrs_u8 bmrs_u4; do
  "$PYTHON" -m sparsejax.main --config="configs/$SETUP.py:$criterion" --workdir="$WORKDIR" \
    --config.seeds="$SEEDS" --config.seed=1000 --config.quiet=True "$@"
done
"$PYTHON" -m sparsejax.main --config="configs/$SETUP.py:bmrs_n" --workdir="$WORKDIR" \
  --config.seeds="$SEEDS" --config.seed=1000 --config.quiet=True \
  --config.bmrs.convention=code --config.experiment_name="${SETUP}_bmrs_n_code" "$@"
"$PYTHON" -m sparsejax.studies.bmrs_report "$WORKDIR"
