#!/bin/sh
# Give this worker container one GPU of its own, then exec the command it was given.
#
# `docker compose up --scale worker=N` starts N identical containers, and Docker hands every one
# of them the same device for a `count: 1` reservation (docker/compose#11863). So the workers
# see all GPUs, and each takes the first one no sibling holds: an exclusive flock on a file in
# a volume the replicas share. The lock lives on file descriptor 9, which the exec'd worker
# inherits, so it is released exactly when the worker process dies.
# DEEPSCAN_WORKER_GPU=K pins the worker to GPU K instead (one service per GPU, or a shared host).
set -eu

lock_dir=${DEEPSCAN_GPU_LOCK_DIR:-/run/deepscan-gpus}

if [ -n "${DEEPSCAN_WORKER_GPU:-}" ]; then
    export CUDA_VISIBLE_DEVICES="$DEEPSCAN_WORKER_GPU"
    exec "$@"
fi

count=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU ' || true)
if [ "${count:-0}" -eq 0 ]; then
    echo "claim-gpu: no NVIDIA GPU visible; install the NVIDIA Container Toolkit on the host, or set DEEPSCAN_DEVICE=cpu and run without this script" >&2
    exit 1
fi

mkdir -p "$lock_dir"
i=0
while [ "$i" -lt "$count" ]; do
    exec 9>"$lock_dir/gpu$i.lock"
    if flock -n 9; then
        export CUDA_VISIBLE_DEVICES="$i"
        echo "claim-gpu: this worker uses GPU $i of $count" >&2
        exec "$@"
    fi
    exec 9>&-
    i=$((i + 1))
done
echo "claim-gpu: all $count GPUs already have a worker; scale the worker service to at most $count" >&2
exit 1
