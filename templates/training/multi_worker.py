"""Training across machines: a ``strategy.run`` loop that works with Keras 3
(TensorFlow-only module).

Keras 3's ``model.fit`` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585,
tensorflow/tensorflow#72388), while a loop over ``strategy.run`` with a Keras 3 model
works. `train_multi_worker` is that loop, with checkpoints written by the chief only and
resumable; `train_transfer_multi_worker` runs the two transfer phases on it (what
`templates.training.run.run_transfer` calls under a multi-worker strategy);
`find_learning_rate_multi_worker` is the finder on the same loop; `local_accuracy` and
`local_predict` score a worker's copy of the model without collective ops, and
`finish_multi_worker` writes a run's outputs from every worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from templates.data.errors import CookbookError
from templates.data.batches import steps_per_epoch
from templates.data.files import write_json
from templates.models.transfer_model import unfreeze
from templates.training.checkpoints import TrainingState
from templates.training.finder import (
    LossSweep,
    choose_learning_rate,
    finder_bounds,
    record_finding,
    sweep_rates,
)
from templates.training.hardware import StrategyChoice
from templates.training.history import merge_histories
from templates.training.plan import TransferPlan
from templates.training.results import PhaseResult, TransferRun, test_part
from templates.training.schedules import scheduled
from templates.training.workers import is_chief, local_accuracy, save_on_every_worker



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
    rule: str = "steepest",
):
    """The learning-rate finder on the `train_multi_worker` loop.

    The same sweep, smoothing, stopping rule and suggestion as
    `templates.training.finder.find_learning_rate` (which needs ``model.fit``); every
    worker runs it in step (the all-reduced loss is the same everywhere, so all stop
    together) and the weights are restored afterwards. ``rule`` is the suggestion rule
    (`templates.training.finder.SUGGESTION_RULES`); `run_transfer` passes the plan's
    ``finder_rule``, as on one machine.

    Returns:
        A `templates.training.finder.LearningRateFinding`.
    """
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
    return sweep.finding(rule)



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
    """The transfer phases of `templates.training.phases` on the `train_multi_worker` loop.

    Phase 1 trains the head with the reused part frozen; phase 2 unfreezes from
    ``from_layer`` (BatchNormalization stays frozen, see `templates.models.transfer_model.unfreeze`)
    and trains at ``fine_tune_learning_rate``. The head is trained through the frozen
    backbone (no cached features: every worker reads only its shard of the images).
    Each phase checkpoints under ``checkpoint_dir/PHASE`` (chief only) and resumes.

    Args:
        transfer: A `templates.models.transfer_model.TransferModel` built in the strategy's scope.
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
        unfreeze(transfer, transfer.fine_tune_from if from_layer == "default" else from_layer)
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







# ## Several machines
# Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585):
# the same plan runs on the strategy.run loop of templates.training.multi_worker instead.
def run_transfer_multi_worker(transfer, strategy, train, validation, plan: TransferPlan,
                              checkpoints, resume: bool, test, output_dir) -> TransferRun:
    """`run_transfer` under a `MultiWorkerMirroredStrategy`: both phases on the ``strategy.run`` loop."""
    tensorboard = [callback for callbacks in plan.callbacks.values() for callback in callbacks
                   if isinstance(callback, keras.callbacks.TensorBoard)]
    if plan.patience or plan.restore_best:
        print("Early stopping and best-epoch restore need model.fit: under a multi-worker "
              "strategy each phase runs all its epochs.", flush=True)
    global_batch_size = plan.batch_size
    if callable(train) and not isinstance(train, tf.data.Dataset):
        dataset_fn = train
        if plan.steps_per_epoch is None:
            raise CookbookError("TransferPlan.steps_per_epoch is needed when the training data "
                                "is a dataset_fn (its size cannot be read).")
        steps = plan.steps_per_epoch
    else:
        steps = plan.steps_per_epoch or steps_per_epoch(train)

        def dataset_fn(context):  # each worker reads every n-th example
            shard = train.unbatch().shard(context.num_input_pipelines,
                                          context.input_pipeline_id)
            return shard.batch(context.get_per_replica_batch_size(global_batch_size)).repeat()

    device = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    choice = StrategyChoice(strategy, "multi_worker", strategy.num_replicas_in_sync, device)
    folder = checkpoints.directory if isinstance(checkpoints, TrainingState) else checkpoints
    resume = checkpoints.resume if isinstance(checkpoints, TrainingState) else resume
    rates = {"head": plan.learning_rate, "fine_tune": plan.fine_tune_learning_rate}
    epochs = {"head": plan.head_epochs, "fine_tune": plan.fine_tune_epochs}

    def before_phase(phase: str):
        # The finder on the same loop, every worker in step: the all-reduced losses are
        # the same everywhere, so every worker chooses the same rate.
        finding = find_learning_rate_multi_worker(choice, lambda: transfer.model, dataset_fn,
                                                  global_batch_size, rule=plan.finder_rule)
        rates[phase], reason = choose_learning_rate(finding, rates[phase],
                                                    finder_bounds(phase))
        if is_chief(strategy) and output_dir is not None:
            record_finding(finding, output_dir, phase, default=rates[phase],
                           title=f"Learning-rate finder ({phase}, multi-worker)")
        return scheduled(rates[phase], plan.schedule, epochs[phase], steps)

    started = time.perf_counter()
    histories = train_transfer_multi_worker(
        choice, transfer, dataset_fn, global_batch_size, steps, plan.head_epochs,
        plan.fine_tune_epochs,
        learning_rate=scheduled(plan.learning_rate, plan.schedule, plan.head_epochs, steps),
        fine_tune_learning_rate=scheduled(plan.fine_tune_learning_rate, plan.schedule,
                                          plan.fine_tune_epochs, steps),
        checkpoint_dir=None if folder is None else os.path.join(folder, "multi_worker"),
        resume=resume, from_layer=plan.fine_tune_from,
        log_dir=os.path.dirname(tensorboard[0].log_dir) if tensorboard else None,
        before_phase=before_phase if plan.find_learning_rates else None)
    scores = {}
    if validation is not None:
        scores["val_accuracy"] = local_accuracy(transfer.model, validation)
    if test is not None:
        scores["test_accuracy"] = local_accuracy(transfer.model, test)
    seconds = round(time.perf_counter() - started, 2)
    phases = {phase: PhaseResult(epochs=len(history.loss), seconds=seconds if phase ==
                                 list(histories)[-1] else 0.0, learning_rate=rates[phase],
                                 scores=scores if phase == list(histories)[-1] else {},
                                 restored=not history.epochs_run,
                                 epochs_run=list(history.epochs_run))
              for phase, history in histories.items()}
    names = {"head": "head", "fine_tune": "fine-tuning"}
    return TransferRun(
        history=merge_histories([(names[phase], {"loss": history.loss})
                                 for phase, history in histories.items()]),
        phases=phases, plan=plan, test_scores=test_part(scores))


def learning_rate_multi_worker(choice: StrategyChoice, build_model: Callable[[], keras.Model],
                               dataset_fn, global_batch_size: int, default: float,
                               output_dir: str | os.PathLike,
                               title: str = "Learning-rate finder (multi-worker)") -> float:
    """The finder on the ``strategy.run`` loop (every worker in step) and the rate to
    train at: every worker sees the same all-reduced losses, so all choose the same rate;
    the chief writes ``lr_finder_train.png/.json`` in ``output_dir``."""
    finding = find_learning_rate_multi_worker(choice, build_model, dataset_fn,
                                              global_batch_size)
    rate, _ = choose_learning_rate(finding, default, finder_bounds("train"))
    if is_chief(choice.strategy):
        rate = record_finding(finding, output_dir, "train", title=title, default=default)
    return rate
