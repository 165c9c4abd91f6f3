"""Hardware and distribution: pick a `tf.distribute` strategy, mixed precision, and a
multi-worker training loop that works with Keras 3 (TensorFlow-only module).

* `choose_strategy`: TPU (`TPUClusterResolver` + `TPUStrategy`), several GPUs
  (`MirroredStrategy`), one GPU, CPU, or several machines (`MultiWorkerMirroredStrategy`
  from ``TF_CONFIG``). Build models, optimisers and metrics inside
  ``choice.strategy.scope()``; the global batch is the per-replica batch times
  ``choice.replicas``.
* `set_mixed_precision`: ``auto`` is float16 on NVIDIA GPUs of compute capability 7.0+,
  bfloat16 on TPU, off on CPU. The template heads keep a float32 output, and Keras 3's
  ``compile`` wraps the optimiser in a `LossScaleOptimizer` under float16.
* ``--xla``: `add_hardware_arguments` / `setup_hardware` switch XLA compilation of the
  phases' training and evaluation steps (`templates.phases.set_jit_compile`).
* `train_multi_worker`: Keras 3's ``model.fit`` fails under
  `MultiWorkerMirroredStrategy` (keras-team/keras#20585, tensorflow/tensorflow#72388),
  while a loop over ``strategy.run`` with a Keras 3 model works; this is that loop, with
  checkpoints written by the chief only and resumable.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from templates.files import atomic_path, write_json
from templates.phases import JIT_COMPILE_SETTINGS, set_jit_compile

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


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints and outputs (worker 0, or single-host)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


@dataclasses.dataclass
class DistributedHistory:
    """What `train_multi_worker` did: loss per epoch and the epochs run here."""

    loss: list[float]
    epochs_run: list[int]
    replicas: int


def train_multi_worker(
    choice: StrategyChoice,
    build_model: Callable[[], keras.Model],
    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    global_batch_size: int,
    steps_per_epoch: int,
    epochs: int,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    log_dir: str | os.PathLike | None = None,
) -> tuple[keras.Model, DistributedHistory]:
    """Data-parallel training with ``strategy.run``: works under
    `MultiWorkerMirroredStrategy`, where Keras 3's ``fit`` does not.

    Args:
        choice: From `choose_strategy` (any strategy works, one machine included).
        build_model: Returns the Keras model (called inside the strategy's scope).
        dataset_fn: Returns this input pipeline's shard, batched per replica
            (``input_context.get_per_replica_batch_size(global_batch_size)``), repeated.
        global_batch_size: Examples per step over all replicas.
        steps_per_epoch: Steps per epoch.
        epochs: Epochs in total (a resumed run trains the remaining ones).
        learning_rate: Adam learning rate, or a schedule (its step count, the
            optimiser's, is saved in the checkpoint, so a resumed run continues it).
        checkpoint_dir: Where the chief writes ``weights.weights.h5`` and
            ``state.json`` after every epoch (a shared folder when machines differ).
        resume: Continue from ``checkpoint_dir``.
        log_dir: TensorBoard logs: the chief writes each epoch's loss (``epoch_loss``,
            as Keras's callback names it) and learning rate there.

    Returns:
        The trained model and a `DistributedHistory`.
    """
    strategy = choice.strategy
    model, optimizer = _compiled(strategy, build_model, learning_rate)
    start, losses = 0, []
    state_path = weights_path = None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        state_path = os.path.join(checkpoint_dir, "state.json")
        weights_path = os.path.join(checkpoint_dir, "weights.weights.h5")
        if resume and os.path.isfile(state_path):
            with open(state_path, encoding="utf-8") as handle:
                saved = json.load(handle)
            model.load_weights(weights_path)
            start, losses = saved["epochs_done"], saved["loss"]

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    train_step = _train_step(strategy, model, optimizer, global_batch_size)
    epochs_run = []
    chief = is_chief(strategy)
    writer = tf.summary.create_file_writer(os.fspath(log_dir)) if log_dir and chief else None
    for epoch in range(start, epochs):
        total = 0.0
        for _ in range(steps_per_epoch):
            total += float(train_step(iterator))
        losses.append(total / steps_per_epoch)
        epochs_run.append(epoch)
        if writer is not None:
            with writer.as_default():
                tf.summary.scalar("epoch_loss", losses[-1], step=epoch)
                tf.summary.scalar("epoch_learning_rate",
                                  float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                                  step=epoch)
            writer.flush()
        if checkpoint_dir is not None:
            save_on_every_worker(chief, weights_path, model.save_weights)
            if chief:
                write_json(state_path, {"epochs_done": epoch + 1, "loss": losses})
    return model, DistributedHistory(losses, epochs_run, choice.replicas)


def _compiled(strategy: tf.distribute.Strategy, build_model: Callable[[], keras.Model],
              learning_rate) -> tuple[keras.Model, keras.optimizers.Optimizer]:
    """The model built in the strategy's scope, compiled with Adam; its optimiser built."""
    with strategy.scope():
        model = build_model()
        # Compiled so the optimizer's state is saved with the weights, and so that under
        # a float16 policy Keras wraps it in a LossScaleOptimizer.
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                      loss="sparse_categorical_crossentropy")
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
    return model, optimizer


def _train_step(strategy: tf.distribute.Strategy, model: keras.Model,
                optimizer: keras.optimizers.Optimizer, global_batch_size: int):
    """One data-parallel step: a batch per replica, gradients all-reduced, the summed
    (global-batch mean) loss returned."""
    loss_object = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    def replica_step(inputs, labels):
        with tf.GradientTape() as tape:
            probabilities = model(inputs, training=True)
            per_example = loss_object(labels, probabilities)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            # Loss scaling for float16 (a LossScaleOptimizer unscales the gradients and
            # skips steps whose gradients overflow); unchanged otherwise.
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def train_step(iterator):
        per_replica = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def find_learning_rate_multi_worker(
    choice: StrategyChoice,
    build_model: Callable[[], keras.Model],
    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    global_batch_size: int,
    steps: int = 100,
    start_learning_rate: float = 1e-7,
    end_learning_rate: float = 10.0,
):
    """The learning-rate finder on the `train_multi_worker` loop.

    The same sweep, smoothing, stopping rule and suggestion as
    `templates.learning_rates.find_learning_rate` (which needs ``model.fit``); every
    worker runs it in step (the all-reduced loss is the same everywhere, so all stop
    together) and the weights are restored afterwards.

    Returns:
        A `templates.learning_rates.LearningRateFinding`.
    """
    from templates.learning_rates import LossSweep, sweep_rates

    rates = sweep_rates(start_learning_rate, end_learning_rate, steps)
    model, optimizer = _compiled(choice.strategy, build_model, float(rates[0]))
    saved = [np.array(weight) for weight in model.get_weights()]
    iterator = iter(choice.strategy.distribute_datasets_from_function(dataset_fn))
    train_step = _train_step(choice.strategy, model, optimizer, global_batch_size)
    sweep = LossSweep(rates)
    try:
        while True:
            optimizer.learning_rate.assign(sweep.rate())
            if sweep.record(float(train_step(iterator))):
                break
    finally:
        model.set_weights(saved)
    return sweep.finding()


def finder_before_phase(choice: StrategyChoice, transfer, dataset_fn, global_batch_size: int,
                        output_dir: str | os.PathLike, schedule: str,
                        epochs: dict[str, int], steps_per_epoch: int,
                        defaults: dict[str, float]) -> Callable[[str], Any]:
    """A ``before_phase`` hook for `train_transfer_multi_worker` that runs the finder.

    Before each phase, `find_learning_rate_multi_worker` sweeps the rate on every
    worker; the chief writes ``lr_finder_PHASE.png/.json``; the phase then trains at the
    suggestion, shaped by ``schedule`` over ``epochs[phase]`` epochs (a recipe's
    ``--find-lr`` under ``--strategy multi_worker``), or at ``defaults[phase]`` when the
    sweep cannot be trusted (`templates.learning_rates.choose_learning_rate`).
    """
    from templates.learning_rates import choose_learning_rate
    from templates.training_options import finder_bounds, record_finding, scheduled

    def before_phase(phase: str):
        finding = find_learning_rate_multi_worker(choice, lambda: transfer.model, dataset_fn,
                                                  global_batch_size)
        # Every worker sees the same all-reduced losses, so all choose the same rate.
        rate, _ = choose_learning_rate(finding, defaults[phase], finder_bounds(phase))
        if is_chief(choice.strategy):
            rate = record_finding(finding, os.fspath(output_dir), phase,
                                  title=f"Learning-rate finder ({phase}, multi-worker)",
                                  default=defaults[phase])
        return scheduled(rate, schedule, epochs[phase], steps_per_epoch)

    return before_phase


def train_transfer_from_arguments(args, choice: StrategyChoice, transfer, dataset_fn,
                                  steps_per_epoch: int, from_layer: str | int | None = "default"
                                  ) -> dict[str, DistributedHistory]:
    """`train_transfer_multi_worker` as a recipe's flags ask for it.

    Reads ``--epochs``, ``--fine-tune-epochs``, the two learning rates, ``--schedule``,
    ``--find-lr``, ``--tensorboard``, ``--resume``, ``--batch-size`` (global) and
    ``--output-dir`` (checkpoints under ``checkpoints/multi_worker``).
    """
    from templates.training_options import scheduled

    return train_transfer_multi_worker(
        choice, transfer, dataset_fn, args.batch_size, steps_per_epoch,
        args.epochs, args.fine_tune_epochs,
        learning_rate=scheduled(args.learning_rate, args.schedule, args.epochs,
                                steps_per_epoch),
        fine_tune_learning_rate=scheduled(args.fine_tune_learning_rate, args.schedule,
                                          args.fine_tune_epochs, steps_per_epoch),
        checkpoint_dir=os.path.join(args.output_dir, "checkpoints", "multi_worker"),
        resume=args.resume, from_layer=from_layer, log_dir=args.tensorboard,
        # --find-lr: the finder on the same loop before each phase.
        before_phase=finder_before_phase(
            choice, transfer, dataset_fn, args.batch_size, args.output_dir, args.schedule,
            {"head": args.epochs, "fine_tune": args.fine_tune_epochs}, steps_per_epoch,
            {"head": args.learning_rate, "fine_tune": args.fine_tune_learning_rate},
        ) if args.find_lr else None)


def save_on_every_worker(chief: bool, path: str | os.PathLike,
                         save: Callable[[str], Any]) -> None:
    """Call ``save`` on every worker; only the chief's file is kept, at ``path``.

    Saving a model reads its variables, which under `MultiWorkerMirroredStrategy` can
    run collective ops that every worker must join (a chief saving alone waits for, or
    crosses, the others' next collective). As TensorFlow's multi-worker guide does, the
    other workers save too, to a temporary folder that is then deleted.
    """
    import shutil
    import tempfile

    path = os.fspath(path)
    name = os.path.basename(path)
    if chief:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        suffix = next((ending for ending in (".weights.h5", ".keras") if name.endswith(ending)),
                      os.path.splitext(name)[1])
        with atomic_path(path, suffix=suffix) as temporary:
            save(temporary)
        return
    folder = tempfile.mkdtemp(prefix="worker-save-")
    try:
        save(os.path.join(folder, name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def train_transfer_multi_worker(
    choice: StrategyChoice,
    transfer,
    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    global_batch_size: int,
    steps_per_epoch: int,
    head_epochs: int,
    fine_tune_epochs: int,
    learning_rate=1e-3,
    fine_tune_learning_rate=1e-4,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    from_layer: str | int | None = "default",
    log_dir: str | os.PathLike | None = None,
    before_phase: Callable[[str], Any] | None = None,
) -> dict[str, DistributedHistory]:
    """The transfer phases of `templates.phases` on the `train_multi_worker` loop.

    Phase 1 trains the head with the reused part frozen; phase 2 unfreezes from
    ``from_layer`` (BatchNormalization stays frozen, see `templates.phases.unfreeze_from`)
    and trains at ``fine_tune_learning_rate``. The head is trained through the frozen
    backbone (no cached features: every worker reads only its shard of the images).
    Each phase checkpoints under ``checkpoint_dir/PHASE`` (chief only) and resumes.

    Args:
        transfer: A `templates.pretrained.TransferModel` built in the strategy's scope.
        dataset_fn: This worker's shard, batched per replica and repeated.
        learning_rate, fine_tune_learning_rate: Rates or schedules for the two phases.
        log_dir: TensorBoard logs, one folder per phase (``head``, ``fine_tune``).
        before_phase: Called with the phase's name (``head``, ``fine_tune``) once its
            layers are frozen or unfrozen, before it trains, unless the phase finished
            in an earlier run; returns the phase's rate or schedule (e.g. from
            `find_learning_rate_multi_worker`), or ``None`` to keep the given one.
        Others: as in `train_multi_worker`.

    Returns:
        ``{"head": DistributedHistory, "fine_tune": DistributedHistory}`` (no
        ``fine_tune`` when ``fine_tune_epochs`` is 0).
    """
    from templates.phases import unfreeze_from

    def directory(root, phase):
        return None if root is None else os.path.join(root, phase)

    def rate(phase, given, epochs):
        state = directory(checkpoint_dir, phase)
        if before_phase is None or (resume and state is not None and _epochs_done(state)
                                    >= epochs):
            return given
        chosen = before_phase(phase)
        return given if chosen is None else chosen

    histories = {}
    transfer.backbone.trainable = False
    _, histories["head"] = train_multi_worker(
        choice, lambda: transfer.model, dataset_fn, global_batch_size, steps_per_epoch,
        head_epochs, rate("head", learning_rate, head_epochs),
        directory(checkpoint_dir, "head"), resume, directory(log_dir, "head"))
    if fine_tune_epochs:
        unfreeze_from(transfer.backbone,
                      transfer.fine_tune_from if from_layer == "default" else from_layer)
        _, histories["fine_tune"] = train_multi_worker(
            choice, lambda: transfer.model, dataset_fn, global_batch_size, steps_per_epoch,
            fine_tune_epochs, rate("fine_tune", fine_tune_learning_rate, fine_tune_epochs),
            directory(checkpoint_dir, "fine_tune"), resume, directory(log_dir, "fine_tune"))
    return histories


def _epochs_done(checkpoint_dir: str) -> int:
    path = os.path.join(checkpoint_dir, "state.json")
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        return int(json.load(handle)["epochs_done"])


# Recipe options built on model.fit: a multi-worker run (a strategy.run loop) refuses them.
FIT_ONLY_OPTIONS = ("--compare-scratch", "--reuse-sweep", "--augment",
                    "--discriminative-factor", "--export-tflite",
                    "--assert-accuracy-at-least")


def start_multi_worker(args) -> None:
    """Refuse the recipe options a multi-worker run cannot honour; say what changes.

    Raises:
        ValueError: naming every option of ``args`` (from `FIT_ONLY_OPTIONS`) that was
            used.
    """
    used = [flag for flag in FIT_ONLY_OPTIONS
            if getattr(args, flag[2:].replace("-", "_"), None)]
    if used:
        raise ValueError(
            f"{', '.join(used)}: not available with --strategy multi_worker, whose "
            "training loop replaces model.fit (run them on one machine).")
    print("Early stopping and best-epoch restore need model.fit: under multi_worker each "
          "phase runs all its epochs.", flush=True)


def finish_multi_worker(
    choice: StrategyChoice,
    histories: dict[str, DistributedHistory],
    model: keras.Model,
    saved_model: keras.Model,
    output_dir: str | os.PathLike,
    class_names: list[str],
    evaluation: dict[str, Any],
    report: Callable[[Callable[[Any], Any]], dict] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """Score, record and save a multi-worker run; return its metrics.

    Every worker scores its (identical) copy of ``model`` on each ``evaluation`` set
    with `local_accuracy` and writes ``OUTPUT_DIR/workers/worker_I.json``; every worker
    joins the save of ``saved_model`` (`save_on_every_worker`); the chief keeps
    ``model.keras`` and writes ``labels.txt``, ``metrics.json`` and, with ``report``,
    the evaluation folder.

    Args:
        evaluation: ``{"val_accuracy": batches, "test_accuracy": batches}`` (either may
            be left out).
        report: Writes the recipe's evaluation folder given a batch predictor (called
            on the chief with `local_predict`, which runs no collective op) and returns
            `templates.evaluation.evaluation_report`'s numbers.
        metadata: Recorded in the metrics (e.g. `templates.environment.run_metadata`).
    """
    from templates.saving import save_model, write_labels

    output_dir = os.fspath(output_dir)
    chief = is_chief(choice.strategy)
    metrics = {
        "strategy": "multi_worker", "replicas": choice.replicas,
        "loss": {phase: history.loss for phase, history in histories.items()},
        "epochs_run": {phase: history.epochs_run for phase, history in histories.items()},
        **{name: local_accuracy(model, batches) for name, batches in evaluation.items()},
        "weights_digest": weights_digest(model), "chief": chief, **metadata,
    }
    write_json(os.path.join(output_dir, "workers", f"worker_{task_index()}.json"), metrics)
    save_on_every_worker(chief, os.path.join(output_dir, "model.keras"),
                         lambda path: save_model(saved_model, path))
    if chief:
        write_labels(class_names, os.path.join(output_dir, "labels.txt"))
        if report is not None:
            numbers = report(local_predict(model))
            metrics["evaluation"] = {"accuracy": numbers["accuracy"],
                                     "macro_f1": numbers["macro"]["f1"]}
        write_json(os.path.join(output_dir, "metrics.json"), metrics)
    score = "test_accuracy" if "test_accuracy" in metrics else "val_accuracy"
    print(f"replicas {choice.replicas}; final {score} {metrics[score]:.4f}; "
          f"weights {metrics['weights_digest']}; outputs in {output_dir}", flush=True)
    return metrics


def local_predict(model: keras.Model) -> Callable[[Any], Any]:
    """A batch predictor for this worker alone: a plain call in inference mode (see
    `local_accuracy`); for `templates.evaluation.evaluation_report(predict=...)`."""
    return lambda inputs: model(inputs, training=False)


def local_accuracy(model: keras.Model, batches) -> float:
    """Accuracy of ``model`` on ``(inputs, labels)`` batches, computed on this worker.

    Plain model calls read the (identical) local copy of the weights: under
    `MultiWorkerMirroredStrategy`, ``model.evaluate`` would run collectives that need
    every worker.
    """
    correct = total = 0
    for inputs, labels in batches:
        probabilities = keras.ops.convert_to_numpy(model(inputs, training=False))
        labels = np.asarray(keras.ops.convert_to_numpy(labels)).reshape(-1)
        correct += int(np.sum(probabilities.argmax(axis=-1) == labels))
        total += len(labels)
    if total == 0:
        raise ValueError("Cannot compute an accuracy: the data yielded no examples.")
    return correct / total


def task_index() -> int:
    """This worker's index in ``TF_CONFIG`` (0 without one)."""
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


def weights_digest(model: keras.Model) -> str:
    """A short SHA-256 of every weight, to compare replicas across machines."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def add_hardware_arguments(parser) -> None:
    """Add ``--strategy``, ``--mixed-precision`` and ``--xla`` to a recipe's parser."""
    group = parser.add_argument_group("hardware")
    group.add_argument("--strategy", choices=STRATEGIES, default="auto",
                       help="tf.distribute strategy: auto picks a TPU, several GPUs "
                            "(mirrored), one GPU, or the CPU. --batch-size is per replica.")
    group.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="auto",
                       help="auto: float16 on NVIDIA GPUs of compute capability 7.0+, "
                            "bfloat16 on TPU, off on CPU.")
    group.add_argument("--xla", choices=sorted(JIT_COMPILE_SETTINGS), default="auto",
                       help="XLA compilation of the training and evaluation steps: auto "
                            "is Keras's rule (on for one GPU or TPU, off on CPU and under "
                            "multi-device strategies); off when an op is not XLA-compatible "
                            "or compile time dominates a short run.")


def setup_hardware(args, *paths, multi_worker: bool = False) -> StrategyChoice:
    """Apply a recipe's ``--strategy`` / ``--mixed-precision`` / ``--xla``; print them.

    Args:
        args: The parsed arguments (`add_hardware_arguments`).
        paths: The recipe's data paths (refused on a TPU when local).
        multi_worker: Whether the recipe has a ``strategy.run`` path for several
            machines. Without one, ``--strategy multi_worker`` raises: ``model.fit``
            fails under `MultiWorkerMirroredStrategy` in Keras 3
            (keras-team/keras#20585).
    """
    if args.strategy == "multi_worker" and not multi_worker:
        raise ValueError(
            "--strategy multi_worker: this recipe trains with model.fit, which fails under "
            "MultiWorkerMirroredStrategy in Keras 3 (keras-team/keras#20585). Train across "
            "machines with templates.distribute.train_multi_worker, as "
            "`python -m recipes.multi_worker_digits` does.")
    choice = choose_strategy(args.strategy)
    check_tpu_paths(choice, *paths)
    policy = set_mixed_precision(args.mixed_precision, choice.device)
    set_jit_compile(args.xla)
    print(f"{choice.describe()}; dtype policy {policy}; XLA {args.xla}", flush=True)
    return choice
