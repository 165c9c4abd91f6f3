"""Hardware and precision on every Keras backend: a strategy (or distribution) and a
mixed-precision policy.

* `choose_strategy`: on TensorFlow, a `tf.distribute` strategy: TPU
  (`TPUClusterResolver` + `TPUStrategy`), several GPUs (`MirroredStrategy`), one GPU,
  CPU, or several machines (`MultiWorkerMirroredStrategy` from ``TF_CONFIG``). On JAX,
  ``mirrored`` (and ``auto`` with several local devices) is Keras's
  `keras.distribution.DataParallel` over every local device; TPUs and GPUs are what JAX
  sees. On PyTorch, one device. Build models, optimisers and metrics inside
  ``choice.strategy.scope()`` (a no-op outside TensorFlow); the global batch is the
  per-replica batch times ``choice.replicas``.
* `set_mixed_precision`: ``auto`` is bfloat16 on TPUs and on NVIDIA GPUs of compute
  capability 8.0+ (Ampere, Hopper and newer have bfloat16 units: no loss scaling
  needed), float16 on NVIDIA GPUs of capability 7.x (Keras 3's ``compile`` then wraps
  the optimiser in a `LossScaleOptimizer`), float32 on CPU. The template heads keep a
  float32 output.

TensorFlow is imported only on the TensorFlow backend. Training across machines is
`templates.training.multi_worker`; the recipes' ``--strategy``, ``--mixed-precision``
and ``--xla`` flags are `templates.cli`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any

import keras

from templates.data.errors import CookbookError

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "tpu", "multi_worker")
MIXED_PRECISION = ("auto", "off", "float16", "bfloat16")


class LocalScope:
    """What a JAX or PyTorch run has in place of a `tf.distribute.Strategy`: a
    ``scope()`` that does nothing (a JAX `keras.distribution` is global) and its
    number of replicas."""

    def __init__(self, replicas: int = 1):
        self.num_replicas_in_sync = int(replicas)

    def scope(self):
        return contextlib.nullcontext()


@dataclasses.dataclass
class StrategyChoice:
    """The strategy in use and what it runs on.

    Attributes:
        strategy: The `tf.distribute.Strategy` (TensorFlow) or a `LocalScope`.
        name: One of `STRATEGIES` (``auto`` resolved).
        replicas: Replicas in sync (the global batch is per-replica batch x replicas).
        device: ``"cpu"``, ``"gpu"`` or ``"tpu"``.
        backend: The Keras backend.
        settings: What was applied on top (the dtype policy, XLA), for `record`.
    """

    strategy: Any
    name: str
    replicas: int
    device: str
    backend: str = "tensorflow"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a run's metrics.json records of the hardware it ran on."""
        return {"backend": self.backend, "strategy": self.name, "device": self.device,
                "replicas": self.replicas, **self.settings}

    def global_batch_size(self, per_replica_batch_size: int) -> int:
        return int(per_replica_batch_size) * self.replicas

    def describe(self) -> str:
        return (f"Strategy: {self.name} ({type(self.strategy).__name__}) on {self.device}, "
                f"{self.replicas} replica(s) in sync; backend {self.backend}")


def _connect_tpu():
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def choose_strategy(name: str = "auto") -> StrategyChoice:
    """Build the strategy named ``name`` (see `STRATEGIES`) for the Keras backend.

    ``auto`` tries, in order: a TPU, several GPUs, one GPU, the CPU. ``multi_worker``
    needs ``TF_CONFIG`` (the cluster and this worker's task) on every machine, and
    TensorFlow.

    Raises:
        ValueError: for an unknown name, a strategy the backend does not have, or
            hardware / configuration that is missing.
    """
    if name not in STRATEGIES:
        raise CookbookError(f"Unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}.")
    backend = keras.backend.backend()
    if backend == "jax":
        return _choose_jax(name)
    if backend == "torch":
        return _choose_torch(name)
    return _choose_tensorflow(name)


def _choose_tensorflow(name: str) -> StrategyChoice:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise CookbookError(
                "--strategy multi_worker needs TF_CONFIG on every machine, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}} (README.md, "Several machines").')
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return StrategyChoice(strategy, name, strategy.num_replicas_in_sync,
                              "gpu" if gpus else "cpu")
    if name in ("tpu", "auto"):
        try:
            strategy = _connect_tpu()
            return StrategyChoice(strategy, "tpu", strategy.num_replicas_in_sync, "tpu")
        except (ValueError, RuntimeError, tf.errors.NotFoundError) as error:
            if name == "tpu":
                raise CookbookError(f"--strategy tpu: no TPU found ({error}). On Colab pick a "
                                    "TPU runtime; on a Cloud TPU VM set TPU_NAME.") from None
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        if not gpus and name == "mirrored":
            raise CookbookError("--strategy mirrored needs at least one GPU; none is visible.")
        strategy = tf.distribute.MirroredStrategy()
        return StrategyChoice(strategy, "mirrored", strategy.num_replicas_in_sync, "gpu")
    if name == "gpu" or (name == "auto" and gpus):
        if not gpus:
            raise CookbookError("--strategy gpu: no GPU is visible to TensorFlow.")
        return StrategyChoice(tf.distribute.OneDeviceStrategy("/gpu:0"), "gpu", 1, "gpu")
    return StrategyChoice(tf.distribute.get_strategy(), "cpu", 1, "cpu")


def _choose_jax(name: str) -> StrategyChoice:
    import jax

    if name == "multi_worker":
        raise CookbookError(
            "--strategy multi_worker is TensorFlow's MultiWorkerMirroredStrategy and the "
            "backend is jax: on JAX call jax.distributed.initialize() on every host and "
            "use --strategy mirrored (docs/guide.md, \"Several devices\").")
    devices = jax.devices()
    platform = devices[0].platform  # "cpu", "gpu" (cuda/rocm) or "tpu"
    device = "gpu" if platform in ("gpu", "cuda", "rocm") else platform
    if name in ("tpu", "gpu") and device != name:
        raise CookbookError(f"--strategy {name}: JAX sees no {name.upper()} (its devices: "
                            f"{[str(item) for item in devices]}).")
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return StrategyChoice(LocalScope(len(devices)), "mirrored", len(devices), device, "jax")
    if name == "cpu" and device != "cpu":
        raise CookbookError(f"--strategy cpu: JAX has already chosen its {device}; start the "
                            "program with JAX_PLATFORMS=cpu to train on the CPU.")
    return StrategyChoice(LocalScope(1), device, 1, device, "jax")


def _choose_torch(name: str) -> StrategyChoice:
    import torch

    if name in ("multi_worker", "mirrored", "tpu"):
        raise CookbookError(f"--strategy {name} is not available on the torch backend: it "
                            "trains on one device (use --strategy auto, gpu or cpu, or the "
                            "jax or tensorflow backend for several devices).")
    device = "gpu" if torch.cuda.is_available() else "cpu"
    if name == "gpu" and device != "gpu":
        raise CookbookError("--strategy gpu: PyTorch sees no CUDA GPU.")
    return StrategyChoice(LocalScope(1), device, 1, device, "torch")


def gpu_compute_capability() -> tuple[int, int] | None:
    """The first NVIDIA GPU's compute capability on the Keras backend, or ``None``."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            for device in jax.devices():
                capability = getattr(device, "compute_capability", None)
                if capability:
                    major, minor = str(capability).split(".")[:2]
                    return int(major), int(minor)
            return None
        if backend == "torch":
            import torch

            return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() \
                else None
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            if "compute_capability" in details:
                return tuple(details["compute_capability"])
    except (RuntimeError, ValueError):
        return None
    return None


def mixed_precision_policy(mode: str = "auto", device: str = "cpu",
                           capability: tuple[int, int] | None = None) -> str:
    """The Keras dtype policy for ``mode`` on ``device`` (``auto``: bfloat16 on TPUs and
    GPUs of compute capability 8.0+, float16 on capability 7.x, float32 otherwise)."""
    if mode not in MIXED_PRECISION:
        raise CookbookError(f"Unknown mixed precision {mode!r}; choose from "
                            f"{', '.join(MIXED_PRECISION)}.")
    if mode == "auto":
        mode = ("bfloat16" if device == "tpu" or (capability and capability >= (8, 0)) else
                "float16" if capability and capability >= (7, 0) else "off")
    return {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[mode]


def set_mixed_precision(mode: str = "auto", device: str = "cpu") -> str:
    """Set Keras's global dtype policy (`mixed_precision_policy`); return its name.

    Args:
        mode: ``auto``, ``off``, ``float16`` or ``bfloat16``.
        device: Where training runs (`StrategyChoice.device`), for ``auto``.
    """
    capability = gpu_compute_capability() if device == "gpu" and mode == "auto" else None
    policy = mixed_precision_policy(mode, device, capability)
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def require_tensorflow(recipe: str, reason: str) -> None:
    """Stop a script that only TensorFlow can run, on another Keras backend, before it
    imports TensorFlow: one sentence on stderr naming the script, why, and the backend,
    and exit status 2 (called at import time, so even ``--help`` says it)."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        print(f"error: {recipe} needs the TensorFlow backend ({reason}), and the Keras "
              f"backend is {backend}; run it with KERAS_BACKEND=tensorflow.", file=sys.stderr)
        sys.exit(2)


def check_tpu_paths(choice: StrategyChoice, *paths: str | os.PathLike | None) -> None:
    """TPU workers cannot read this machine's files: refuse local paths on a TPU.

    Raises:
        ValueError: naming the local paths, when ``choice`` is a TPU strategy.
    """
    if choice.device != "tpu":
        return
    local = [os.fspath(path) for path in paths
             if path is not None and not os.fspath(path).startswith("gs://")]
    if local:
        raise CookbookError(
            f"TPU workers cannot read local files: {local}. Copy the data to a Cloud "
            "Storage bucket and pass gs:// paths (or use a small dataset held in memory).")
