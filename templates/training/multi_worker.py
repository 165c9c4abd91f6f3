"""Training across machines: a ``strategy.run`` loop that works with Keras 3
(TensorFlow-only module).

Keras 3's ``model.fit`` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585,
tensorflow/tensorflow#72388), while a loop over ``strategy.run`` with a Keras 3 model
works. `fit_on_loop` is that loop in ``fit``'s place: it drives the same Keras callbacks,
so a phase on it runs through `templates.training.checkpoints.run_phase` and leaves the
same checkpoint files as on one machine (``PHASE.epochs.json``, ``PHASE.backup/``,
``PHASE.weights.h5``, ``PHASE.done.json``), written by the chief and resumed by every
worker. `loop_phase` gives `templates.training.run.run_transfer` a phase's finder and
trainer on the loop (everything else, the rates, checkpoints and scores, is
`run_transfer`'s); `train_multi_worker` trains any model on it;
`find_learning_rate_multi_worker` is the finder on the same loop.
`templates.training.workers` holds what every worker does around it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from templates.data.batches import steps_per_epoch as count_steps
from templates.data.errors import CookbookError
from templates.models.transfer_model import unfreeze
from templates.training.checkpoints import TrainingState, chief_process, run_phase
from templates.training.finder import (
    DEFAULT_RULE,
    LossSweep,
    choose_learning_rate,
    finder_bounds,
    record_finding,
    sweep_rates,
)
from templates.training.hardware import StrategyChoice
from templates.training.plan import TransferPlan


@dataclasses.dataclass
class DistributedHistory:
    """What `train_multi_worker` did: loss per epoch and the epochs run here."""

    loss: list[float]
    epochs_run: list[int]
    replicas: int


def fit_on_loop(
    choice: StrategyChoice,
    model: keras.Model,
    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    global_batch_size: int,
    steps_per_epoch: int,
    epochs: int,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    callbacks: Iterable[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    compile: bool = True,
) -> keras.callbacks.History:
    """``model.fit`` on a ``strategy.run`` loop: Adam at ``learning_rate`` (a rate or a
    schedule), ``epochs`` epochs of ``steps_per_epoch`` all-reduced steps, driving
    ``callbacks`` as ``fit`` would (a `keras.callbacks.BackupAndRestore` among them
    restores the weights, optimiser state and epoch). Each epoch's logs hold ``loss``
    (the global-batch mean) and ``learning_rate``. TensorBoard callbacks are written by
    the chief alone (``epoch_loss`` and ``epoch_learning_rate``, as Keras's callback
    names them).

    Args:
        dataset_fn: Returns this input pipeline's shard, batched per replica
            (``input_context.get_per_replica_batch_size(global_batch_size)``), repeated.
        initial_epoch: The epoch to start from when no backup says otherwise.
        compile: Compile ``model`` with a new Adam optimiser first (as each phase
            does); ``False`` keeps its compiled optimiser and that optimiser's state.
    """
    strategy = choice.strategy
    callbacks = list(callbacks)
    logs_to = [callback.log_dir for callback in callbacks
               if isinstance(callback, keras.callbacks.TensorBoard)]
    callbacks = [callback for callback in callbacks
                 if not isinstance(callback, keras.callbacks.TensorBoard)]
    if compile:
        _compiled(strategy, lambda: model, learning_rate)
    optimizer = model.optimizer
    history = keras.callbacks.History()
    driven = keras.callbacks.CallbackList([*callbacks, history], model=model)
    model._initial_epoch = None  # set by a backup that restores
    driven.on_train_begin()
    start = model._initial_epoch or initial_epoch
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    train_step = _train_step(strategy, model, optimizer, global_batch_size)
    writer = (tf.summary.create_file_writer(logs_to[0]) if logs_to and chief_process()
              else None)
    for epoch in range(start, epochs):
        driven.on_epoch_begin(epoch)
        total = sum(float(train_step(iterator)) for _ in range(steps_per_epoch))
        logs = {"loss": total / steps_per_epoch, "learning_rate": float(
            keras.ops.convert_to_numpy(optimizer.learning_rate))}
        if writer is not None:
            with writer.as_default():
                tf.summary.scalar("epoch_loss", logs["loss"], step=epoch)
                tf.summary.scalar("epoch_learning_rate", logs["learning_rate"], step=epoch)
            writer.flush()
        driven.on_epoch_end(epoch, logs)
    driven.on_train_end()
    return history


def train_multi_worker(
    choice: StrategyChoice,
    build_model: Callable[[], keras.Model],
    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    global_batch_size: int,
    steps_per_epoch: int,
    epochs: int,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    state: TrainingState | None = None,
    phase: str = "train",
    log_dir: str | None = None,
) -> tuple[keras.Model, DistributedHistory]:
    """Data-parallel training of any model on the loop (`fit_on_loop`), checkpointed as
    one phase of ``state`` (`templates.training.checkpoints.run_phase`).

    A resumed run continues the phase in progress; a finished phase asked for more
    ``epochs`` continues from its weights and optimiser state (a schedule's step count
    included) to the new count.

    Args:
        choice: From `choose_strategy` (any strategy works, one machine included).
        build_model: Returns the Keras model (called inside the strategy's scope).
        state: Where the chief checkpoints every epoch (a folder every worker reads:
            shared when machines differ); ``None``: no checkpoints.
        phase: The phase's name in ``state``.
        log_dir: TensorBoard logs, written by the chief.

    Returns:
        The trained model and a `DistributedHistory`.
    """
    done = len(state.history(phase).epoch) if state is not None else 0
    grow = state is not None and state.finished(phase) and done < epochs
    with choice.strategy.scope():
        # Creating the variables broadcasts their values from the chief: every worker
        # has read the state above before the chief changes it below.
        model = build_model()
    _compiled(choice.strategy, lambda: model, learning_rate)
    initial_epoch = 0
    if grow:
        state.restore(phase, model)  # the weights and the optimiser's state
        state.reopen(phase)
        initial_epoch = done
    logs = [keras.callbacks.TensorBoard(log_dir)] if log_dir else []
    history = run_phase(state, phase, model, lambda callbacks: fit_on_loop(
        choice, model, dataset_fn, global_batch_size, steps_per_epoch, epochs,
        learning_rate, callbacks + logs, initial_epoch=initial_epoch, compile=False))
    losses = list(history.history.get("loss", []))
    return model, DistributedHistory(losses, list(range(done, len(losses))), choice.replicas)


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
    rule: str = DEFAULT_RULE,
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



def loop_data(train, plan: TransferPlan):
    """``(dataset_fn, steps per epoch)`` for the loop from a run's training data: a
    batched `tf.data.Dataset` (each worker reads every n-th example) or a
    ``dataset_fn`` (then ``plan.steps_per_epoch`` is needed)."""
    if callable(train) and not isinstance(train, tf.data.Dataset):
        if plan.steps_per_epoch is None:
            raise CookbookError("TransferPlan.steps_per_epoch is needed when the training "
                                "data is a dataset_fn (its size cannot be read).")
        return train, plan.steps_per_epoch

    def dataset_fn(context):
        shard = train.unbatch().shard(context.num_input_pipelines, context.input_pipeline_id)
        return shard.batch(context.get_per_replica_batch_size(plan.batch_size)).repeat()

    return dataset_fn, plan.steps_per_epoch or count_steps(train)


def loop_phase(phase: str, transfer, train, plan: TransferPlan
               ) -> tuple[Callable[[], Any], Callable[..., keras.callbacks.History]]:
    """A phase of `templates.training.run.run_transfer` on the loop, under the model's
    `MultiWorkerMirroredStrategy`: ``(finder, trainer)`` as the ``fit`` path has them.
    The head trains through the frozen backbone (every worker reads only its shard of
    the data, so there are no cached features); fine-tuning unfreezes from the plan's
    layer (BatchNormalization kept frozen). Every worker runs the finder in step: the
    all-reduced losses are the same everywhere, so all choose the same rate."""
    strategy = transfer.model.distribute_strategy
    device = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    choice = StrategyChoice(strategy, "multi_worker", strategy.num_replicas_in_sync, device)
    dataset_fn, steps = loop_data(train, plan)

    def set_trainable():
        if phase == "head":
            transfer.backbone.trainable = False
        else:
            unfreeze(transfer, transfer.fine_tune_from if plan.fine_tune_from == "default"
                     else plan.fine_tune_from)

    def finder():
        set_trainable()
        return find_learning_rate_multi_worker(choice, lambda: transfer.model, dataset_fn,
                                               plan.batch_size, rule=plan.finder_rule)

    def trainer(learning_rate, callbacks, epochs, **fit_only):
        set_trainable()
        return fit_on_loop(choice, transfer.model, dataset_fn, plan.batch_size, steps,
                           epochs, learning_rate, callbacks)

    if phase == "head" and (plan.patience or plan.restore_best):
        print("Early stopping and best-epoch restore need model.fit's validation pass: "
              "under a multi-worker strategy each phase runs all its epochs.", flush=True)
    return finder, trainer


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
    if chief_process():
        rate = record_finding(finding, output_dir, "train", title=title, default=default)
    return rate
