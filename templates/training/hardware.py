"""Hardware and precision: pick a `tf.distribute` strategy and a mixed-precision policy
(TensorFlow-only module).

* `choose_strategy`: TPU (`TPUClusterResolver` + `TPUStrategy`), several GPUs
  (`MirroredStrategy`), one GPU, CPU, or several machines (`MultiWorkerMirroredStrategy`
  from ``TF_CONFIG``). Build models, optimisers and metrics inside
  ``choice.strategy.scope()``; the global batch is the per-replica batch times
  ``choice.replicas``.
* `set_mixed_precision`: ``auto`` is float16 on NVIDIA GPUs of compute capability 7.0+,
  bfloat16 on TPU, off on CPU. The template heads keep a float32 output, and Keras 3's
  ``compile`` wraps the optimiser in a `LossScaleOptimizer` under float16.

Training across machines is `templates.training.multi_worker`; the recipes' ``--strategy``,
``--mixed-precision`` and ``--xla`` flags are `templates.cli`.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "tpu", "multi_worker")
MIXED_PRECISION = ("auto", "off", "float16", "bfloat16")


@dataclasses.dataclass
class StrategyChoice:
    """The strategy in use and what it runs on.

    Attributes:
        strategy: The `tf.distribute.Strategy`.
        name: One of `STRATEGIES` (``auto`` resolved).
        replicas: Replicas in sync (the global batch is per-replica batch x replicas).
        device: ``"cpu"``, ``"gpu"`` or ``"tpu"``.
    """

    strategy: tf.distribute.Strategy
    name: str
    replicas: int
    device: str

    def global_batch_size(self, per_replica_batch_size: int) -> int:
        return int(per_replica_batch_size) * self.replicas

    def describe(self) -> str:
        return (f"Strategy: {self.name} ({type(self.strategy).__name__}) on {self.device}, "
                f"{self.replicas} replica(s) in sync")


def _connect_tpu():
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def choose_strategy(name: str = "auto") -> StrategyChoice:
    """Build the strategy named ``name`` (see `STRATEGIES`).

    ``auto`` tries, in order: a TPU, several GPUs, one GPU, the CPU. ``multi_worker``
    needs ``TF_CONFIG`` (the cluster and this worker's task) on every machine.

    Raises:
        ValueError: for an unknown name, or hardware / configuration that is missing.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}.")
    gpus = tf.config.list_physical_devices("GPU")
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
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
                raise ValueError(f"--strategy tpu: no TPU found ({error}). On Colab pick a "
                                 "TPU runtime; on a Cloud TPU VM set TPU_NAME.") from None
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        if not gpus and name == "mirrored":
            raise ValueError("--strategy mirrored needs at least one GPU; none is visible.")
        strategy = tf.distribute.MirroredStrategy()
        return StrategyChoice(strategy, "mirrored", strategy.num_replicas_in_sync, "gpu")
    if name == "gpu" or (name == "auto" and gpus):
        if not gpus:
            raise ValueError("--strategy gpu: no GPU is visible to TensorFlow.")
        return StrategyChoice(tf.distribute.OneDeviceStrategy("/gpu:0"), "gpu", 1, "gpu")
    return StrategyChoice(tf.distribute.get_strategy(), "cpu", 1, "cpu")


def _gpu_compute_capability() -> tuple[int, int] | None:
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        if "compute_capability" in details:
            return tuple(details["compute_capability"])
    return None


def set_mixed_precision(mode: str = "auto", device: str = "cpu") -> str:
    """Set Keras's global dtype policy; return its name.

    Args:
        mode: ``auto``, ``off``, ``float16`` or ``bfloat16``.
        device: Where training runs (`StrategyChoice.device`), for ``auto``.
    """
    if mode not in MIXED_PRECISION:
        raise ValueError(f"Unknown mixed precision {mode!r}; choose from "
                         f"{', '.join(MIXED_PRECISION)}.")
    if mode == "auto":
        capability = _gpu_compute_capability() if device == "gpu" else None
        mode = ("bfloat16" if device == "tpu" else
                "float16" if capability is not None and capability >= (7, 0) else "off")
    policy = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[mode]
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


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
        raise ValueError(
            f"TPU workers cannot read local files: {local}. Copy the data to a Cloud "
            "Storage bucket and pass gs:// paths (or use a small dataset held in memory).")
