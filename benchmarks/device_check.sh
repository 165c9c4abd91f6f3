#!/usr/bin/env bash
# The device check, as one prepared script (docs/benchmarks.md, "The device check").
#
# Here, once, with a package index and ../shared:   bash benchmarks/device_check.sh prepare
# On the lent GPU machine (JAX, Python 3.12, no Keras, no TensorFlow, no index), with
# benchmarks/device carried along:                  bash benchmarks/device_check.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=benchmarks/device

case "${1:-}" in
prepare)
    mkdir -p "$DEVICE/wheels" "$DEVICE/keras_home/models"
    # Keras and the two dependencies that machine lacks (it has numpy, h5py, ml-dtypes,
    # rich, absl-py, packaging, Pillow, matplotlib, scikit-learn), for its Python 3.12.
    python -m pip download keras==3.15.1 namex optree --python-version 3.12 \
        --only-binary=:all: --platform manylinux_2_28_x86_64 --no-deps -d "$DEVICE/wheels"
    python -m benchmarks.accelerator --prepare-photos ../shared/data/cats_vs_dogs \
        "$DEVICE/photos" --photos-per-class 150
    cp ../shared/keras_home/models/mobilenet_2_5_224_tf_no_top.h5 "$DEVICE/keras_home/models/"
    du -sh "$DEVICE"
    ;;
run)
    python3 -m pip install --quiet --no-index --no-deps --target /tmp/keras-wheels \
        "$DEVICE"/wheels/*.whl
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    OUT="${OUT:-.}"
    PYTHONPATH="/tmp/keras-wheels:$PWD" KERAS_BACKEND=jax timeout 540 python3 -m benchmarks.accelerator \
        --photos "$DEVICE/photos" --keras-home "$DEVICE/keras_home" \
        --output "$OUT/accelerator.json"
    ;;
*)
    echo "usage: bash benchmarks/device_check.sh prepare|run" >&2
    exit 2
    ;;
esac
