#!/bin/bash
# Multi-node training of one config with torchrun (no SLURM): run this on every node.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 GPUS_PER_NODE=4 experiments/cluster/torchrun.sh \
#       experiments/ring8/protocol.yaml experiments/ring8/gan.yaml
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 GPUS_PER_NODE=4 experiments/cluster/torchrun.sh \
#       experiments/ring8/protocol.yaml experiments/ring8/gan.yaml
#
# The leading arguments that do not start with "-" are config files, composed in order (a table's
# protocol, then a model's differences); the rest go to train.py.
# torchrun starts GPUS_PER_NODE processes per node and sets RANK / LOCAL_RANK / WORLD_SIZE;
# Lightning recognises the torchelastic environment and joins them into one DDP job.
# ACCELERATOR=cpu runs the same on CPU nodes (gloo), as the test suite does on one machine.
# The progress bar is off (logs are files); --trainer.enable_progress_bar true after the configs turns it on.
set -euo pipefail
CONFIGS=()
while [[ $# -gt 0 && $1 != -* ]]; do CONFIGS+=(--config "$1"); shift; done
if [[ ${#CONFIGS[@]} -eq 0 ]]; then
    echo "usage: experiments/cluster/torchrun.sh <config.yaml>... [train.py overrides]" >&2
    exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE=${GPUS_PER_NODE:-1}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
ACCELERATOR=${ACCELERATOR:-gpu}
exec torchrun --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$GPUS_PER_NODE" \
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
    "$(dirname "$0")/../../train.py" fit "${CONFIGS[@]}" \
    --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS_PER_NODE" \
    --trainer.accelerator "$ACCELERATOR" --trainer.strategy ddp --trainer.enable_progress_bar false "$@"
