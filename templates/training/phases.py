"""Training phases shared by both templates: freeze, train the head, fine-tune.

The schedule is the one transfer learning needs to be trustworthy:

1. Freeze the reused part and train only the new head. By default the frozen part's
   features are computed once and cached, so each epoch costs a pass over a tiny head
   instead of a pass through the whole backbone.
2. Unfreeze the top of the reused part and train everything at a much lower learning
   rate. Every BatchNormalization layer stays in inference mode: in Keras 3, calling a
   base with ``training=False`` does not keep it there once the base is unfrozen
   (keras-team/keras#20285), so its moving statistics would drift towards the new
   data's batches and wreck the features the head was trained on. A BatchNormalization
   layer with ``trainable = False`` always runs in inference mode, so that is what
   `unfreeze_from` sets.

Everything here is plain Keras 3 and runs on any backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.batches import (
    ShuffledArrays,
    array_batches,
    epoch_seed,
    set_epoch,
    steps_per_epoch,
)
from templates.data.feature_store import DEFAULT_FEATURE_MEMORY_GB, FeatureStore
from templates.data.progress import Progress

#: Extractions shorter than this (batches) report no progress.
PROGRESS_MINIMUM_BATCHES = 20
from templates.models.prediction import batch_predictor
from templates.models.transfer_model import Transferable, unfreeze
from templates.training.compilation import compile_classifier
from templates.training.finder import DEFAULT_RULE
from templates.training.seeds import following_epochs, reseed_generators


def evaluate_scores(model: keras.Model, data, monitor: str = "val_accuracy") -> dict[str, float]:
    """Every compiled metric of ``model`` on ``(inputs, labels)`` arrays or on batches
    (``accuracy``, and e.g. ``macro_f1``), without the loss.

    A model that is not compiled (for example one whose weights a resumed run restored
    from a finished phase, without training it) is compiled for evaluation first, with
    the metric ``monitor`` needs.
    """
    if not getattr(model, "compiled", False):
        # The rate is never used: nothing trains here.
        compile_classifier(model, 1e-3, monitor=monitor)
    if isinstance(data, tuple) and len(data) == 2:
        result = model.evaluate(data[0], data[1], verbose=0, return_dict=True)
    else:
        result = model.evaluate(data, verbose=0, return_dict=True)
    return {name: float(value) for name, value in result.items() if name != "loss"}


def evaluate_accuracy(model: keras.Model, data) -> float:
    """Accuracy of ``model`` on ``(inputs, labels)`` arrays or on batches (see
    `evaluate_scores`)."""
    return evaluate_scores(model, data)["accuracy"]


def _batch_count(data) -> int | None:
    try:
        return steps_per_epoch(data)
    except ValueError:
        return None


def extract_features(
    feature_extractor: keras.Model, data: Iterable, store: FeatureStore | None = None,
    what: str = "features", transform: Callable | None = None,
    predict: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``feature_extractor`` once over ``data`` (batches of ``(inputs, labels)``).

    Args:
        store: Where the features go (`templates.data.feature_store.FeatureStore`: in
            memory up to its limit, memory-mapped beyond it); a new default one when
            omitted. Pass the same store to append several passes (augmented views).
        what: What the progress lines call the step (long extractions report by 10%).
        transform: Applied to each batch of inputs first (e.g. a random augmentation).
        predict: Returns a batch's features; ``None``: `batch_predictor` for a pass of
            ``data``'s length (ONNX Runtime or a frozen graph on TensorFlow, where the
            pass is long enough). Several passes over one extractor share one.

    Returns:
        ``(features, labels)``, in the order of ``data``: the features of every pass
        appended to ``store`` so far (an array, or a `numpy.memmap`), the labels of this
        pass.
    """
    total = _batch_count(data)
    predict = predict or batch_predictor(feature_extractor, total)
    store = store if store is not None else FeatureStore()
    progress = Progress(f"Extracting {what}", "batches", minimum_total=PROGRESS_MINIMUM_BATCHES)
    labels = []
    for index, (inputs, batch_labels) in enumerate(data, start=1):
        if transform is not None:
            inputs = transform(inputs)
        store.append(np.asarray(keras.ops.convert_to_numpy(predict(inputs))))
        labels.append(keras.ops.convert_to_numpy(batch_labels))
        if total:
            progress(index, total)
    if not labels:
        raise CookbookError("Cannot extract features: the data yielded no batches.")
    return store.rows(), np.concatenate(labels)


def head_training_features(transfer: Transferable, train_data: Iterable,
                           augmentation: keras.layers.Layer | None = None, views: int = 0,
                           seed: int | None = None,
                           memory_limit_gb: float | None = DEFAULT_FEATURE_MEMORY_GB,
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The frozen part's features of ``train_data``, as `train_head` caches them.

    Extract them once and pass them (``train_features=``) to both
    `find_head_learning_rate` and `train_head`: the finder and the head then train on
    the same features, and the backbone runs over the training data once, not twice.

    With ``augmentation`` and ``views=K``, the features of K randomly augmented views of
    every example are added to those of the originals (K + 1 rows per example): the head
    then sees augmented inputs while training on cached features, at the cost of K more
    passes of the frozen part over the training data, once. View ``v`` is drawn from
    ``(seed, v)``, so a rerun caches the same views. The views multiply the feature
    cache, never the decoded images: beyond ``memory_limit_gb`` the features are
    memory-mapped from a file (`templates.data.feature_store.FeatureStore`).
    """
    if views < 0:
        raise CookbookError(f"views must be 0 or more; got {views}.")
    if views and augmentation is None:
        raise CookbookError("views need an augmentation to draw them with.")
    transfer.backbone.trainable = False
    store = FeatureStore(memory_limit_gb)
    # A shuffled training set is read in its epoch-0 order, so the cached features (and
    # the orders drawn from them) do not depend on how often it was read.
    set_epoch(train_data, 0)
    # One predictor for the originals and every view: together they may be long enough
    # to pay for ONNX Runtime or a frozen graph (`batch_predictor`) where one pass is not.
    passes = _batch_count(train_data)
    predict = batch_predictor(transfer.feature_extractor, passes and passes * (views + 1))
    features, labels = extract_features(transfer.feature_extractor, train_data, store,
                                        what="the training set's features", predict=predict)
    if not views:
        return features, labels
    all_labels = [labels]
    for view in range(views):
        reseed_generators(augmentation, epoch_seed(0 if seed is None else seed, view))
        set_epoch(train_data, 0)
        features, view_labels = extract_features(
            transfer.feature_extractor, train_data, store,
            what=f"the features of augmented view {view + 1} of {views}",
            transform=lambda inputs: augmentation(inputs, training=True), predict=predict)
        all_labels.append(view_labels)
        print(f"Cached the features of augmented view {view + 1} of {views}.")
    return features, np.concatenate(all_labels)


def with_augmentation(model: keras.Model, augmentation: keras.layers.Layer | None) -> keras.Model:
    """A training-only model applying ``augmentation`` before ``model``.

    The weights are shared, so training it trains ``model``; ``model`` itself (what gets
    saved) stays free of random layers.
    """
    if augmentation is None:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="inputs")
    return keras.Model(inputs, model(augmentation(inputs)), name=f"augmented_{model.name}")


def train_head(
    transfer: Transferable,
    train_data: Iterable,
    validation_data: Iterable | None = None,
    epochs: int = 5,
    learning_rate: float = 1e-3,
    cache_features: bool = True,
    augmentation: keras.layers.Layer | None = None,
    batch_size: int = 32,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    seed: int | None = None,
    verbose: int | str = "auto",
    train_features: tuple[np.ndarray, np.ndarray] | None = None,
    class_weight: dict[int, float] | None = None,
    monitor: str = "val_accuracy",
    label_smoothing: float = 0.0,
    feature_memory_gb: float | None = DEFAULT_FEATURE_MEMORY_GB,
) -> keras.callbacks.History:
    """Phase 1: train the new head on top of the frozen reused part.

    Args:
        transfer: The model from `pretrained_model` (or any `Transferable`).
        train_data: Batches of ``(images, integer labels)``, e.g. a `tf.data.Dataset`.
        validation_data: Same form, or ``None``.
        epochs: Passes over the training data.
        learning_rate: Adam learning rate for the head.
        cache_features: Compute the frozen part's features once and train the head on
            them (fast). ``False`` runs the frozen backbone inside the training graph
            every epoch, which is needed for random ``augmentation``.
        augmentation: Keras layers applied to training images (in-graph mode only).
        batch_size: Batch size when training on cached features.
        callbacks: Keras callbacks for ``fit``.
        seed: Seeds the shuffling of cached features (epoch ``e``'s order depends only on
            ``(seed, e)``, see `templates.data.batches`).
        verbose: Passed to ``fit``.
        train_features: ``train_data``'s features from `head_training_features`,
            already extracted (e.g. for the learning-rate finder); ``None`` extracts
            them here.
        class_weight: ``{label: weight}`` scaling each example's loss (e.g.
            `templates.training.plan.balanced_class_weight`); ``None``: all 1.
        monitor: What the callbacks watch; compiles its metric (`compile_classifier`).
        label_smoothing: Smooth the training targets (`templates.training.losses`).
        feature_memory_gb: The cached features (training and validation together) stay
            in memory up to this many GB, beyond it memory-mapped from a file
            (`templates.data.feature_store.FeatureStore`); ``None``: no limit.

    Returns:
        The `keras.callbacks.History` of the phase.
    """
    if train_features is not None and not cache_features:
        raise CookbookError(
            "train_features are cached features, but cache_features=False trains through "
            "the backbone on train_data: pass one or the other.")
    if cache_features and augmentation is not None:
        raise CookbookError(
            "Random augmentation cannot be used with cache_features=True: cached features "
            "are computed once, so they would never change. Pass cache_features=False to "
            "run the frozen backbone in the training graph."
        )
    transfer.backbone.trainable = False
    if not cache_features:
        training_model = with_augmentation(transfer.model, augmentation)
        compile_classifier(training_model, learning_rate, monitor=monitor,
                           label_smoothing=label_smoothing)
        history = training_model.fit(
            train_data, validation_data=validation_data, epochs=epochs,
            callbacks=following_epochs(callbacks, train_data), shuffle=False,
            verbose=verbose, class_weight=class_weight,
        )
        _compile_for_evaluation(transfer, training_model, learning_rate)
        return history

    train_features, train_labels = (train_features if train_features is not None
                                    else head_training_features(
                                        transfer, train_data,
                                        memory_limit_gb=feature_memory_gb))
    validation = None
    if validation_data is not None:
        # One budget for both: the validation features get what the training ones left.
        held = 0 if isinstance(train_features, np.memmap) else train_features.nbytes
        left = (None if feature_memory_gb is None
                else max(feature_memory_gb - held / 1e9, 0.0))
        validation_features, validation_labels = extract_features(
            transfer.feature_extractor, validation_data, FeatureStore(left))
        validation = array_batches(validation_features, validation_labels,
                                   batch_size=max(batch_size, 256), shuffle=False,
                                   dtype=str(validation_features.dtype))
    if seed is not None:
        keras.utils.set_random_seed(seed)
    compile_classifier(transfer.head, learning_rate, monitor=monitor,
                       label_smoothing=label_smoothing)
    # Epoch e's order depends only on (seed, e): a resumed run sees the same orders.
    # Gathered batch by batch from the features' array (dtype=): TensorFlow holds no copy
    # of them (a feature map of 7x7x256 floats is 50 KB a photo at 224 px).
    batches = array_batches(train_features, train_labels, batch_size=batch_size, seed=seed,
                            dtype=str(train_features.dtype))
    history = transfer.head.fit(
        batches, shuffle=False, epochs=epochs, validation_data=validation,
        callbacks=following_epochs(callbacks, batches), verbose=verbose,
        class_weight=class_weight,
    )
    _compile_for_evaluation(transfer, transfer.head, learning_rate)
    return history


def _compile_for_evaluation(transfer: Transferable, trained: keras.Model, learning_rate: float):
    """Leave ``transfer.model`` compiled, so ``evaluate`` and ``predict`` work on it."""
    if trained is not transfer.model:
        compile_classifier(transfer.model, learning_rate)


def fine_tune(
    transfer: Transferable,
    train_data: Iterable,
    validation_data: Iterable | None = None,
    epochs: int = 3,
    learning_rate: float = 1e-5,
    from_layer: str | int | None = "default",
    augmentation: keras.layers.Layer | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    verbose: int | str = "auto",
    learning_rate_multipliers: dict[str, float] | None = None,
    class_weight: dict[int, float] | None = None,
    monitor: str = "val_accuracy",
    label_smoothing: float = 0.0,
) -> keras.callbacks.History:
    """Phase 2: unfreeze the top of the reused part and train end to end, gently.

    Args:
        transfer: The model whose head was trained by `train_head`.
        train_data: Batches of ``(images, integer labels)``.
        validation_data: Same form, or ``None``.
        epochs: Epochs of fine-tuning (counted from ``initial_epoch``).
        learning_rate: Adam learning rate; keep it 10-100x below the head's.
        from_layer: Where unfreezing starts: ``"default"`` uses the template's
            ``fine_tune_from`` (the registry's choice), a layer name or index picks
            another, ``None`` unfreezes the whole reused part.
        augmentation: Keras layers applied to training images.
        callbacks: Keras callbacks for ``fit``.
        initial_epoch: Epoch number to start counting from (for continuous curves).
        verbose: Passed to ``fit``.
        learning_rate_multipliers: Discriminative rates: ``{variable.path: multiplier}``
            from `templates.training.optimizers.discriminative_multipliers` (earlier blocks
            slower); ``None`` trains every unfrozen layer at ``learning_rate``.
        class_weight: ``{label: weight}`` scaling each example's loss; ``None``: all 1.
        monitor: What the callbacks watch; compiles its metric (`compile_classifier`).
        label_smoothing: Smooth the training targets (`templates.training.losses`).

    Returns:
        The `keras.callbacks.History` of the phase.
    """
    if from_layer == "default":
        from_layer = transfer.fine_tune_from
    unfreeze(transfer, from_layer)
    training_model = with_augmentation(transfer.model, augmentation)
    compile_classifier(training_model, learning_rate,
                       learning_rate_multipliers=learning_rate_multipliers, monitor=monitor,
                       label_smoothing=label_smoothing)
    history = training_model.fit(
        train_data, validation_data=validation_data, epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch, callbacks=following_epochs(callbacks, train_data),
        shuffle=False, verbose=verbose, class_weight=class_weight,
    )
    _compile_for_evaluation(transfer, training_model, learning_rate)
    return history


def find_head_learning_rate(
    transfer: Transferable,
    train_data: Iterable,
    batch_size: int = 32,
    seed: int | None = None,
    steps: int = 100,
    train_features: tuple[np.ndarray, np.ndarray] | None = None,
    rule: str = DEFAULT_RULE,
):
    """Run the learning-rate finder for head training, on cached features.

    Args:
        train_features: ``train_data``'s features from `head_training_features`; pass
            the same to `train_head` to extract them once. ``None`` extracts them here.
        rule: How to suggest a rate (`templates.training.finder.SUGGESTION_RULES`).

    Returns:
        The `templates.training.finder.LearningRateFinding` (its ``suggestion`` is the
        rate to pass to `train_head`). The head's weights are restored.
    """
    from templates.training.finder import find_learning_rate

    features, labels = (train_features if train_features is not None
                        else head_training_features(transfer, train_data))
    batches = ShuffledArrays(features, labels, batch_size=batch_size, seed=seed)
    return find_learning_rate(transfer.head, batches, steps=steps, rule=rule,
                              seed=0 if seed is None else seed)


def find_fine_tune_learning_rate(
    transfer: Transferable,
    train_data: Iterable,
    from_layer: str | int | None = "default",
    steps: int = 50,
    end_learning_rate: float = 0.1,
    rule: str = DEFAULT_RULE,
    seed: int = 0,
):
    """Run the learning-rate finder for fine-tuning (the top of the backbone unfrozen).

    The sweep starts from the trained head's state with BatchNormalization frozen, as
    in `fine_tune`; afterwards the weights are restored and the backbone frozen again.
    ``rule``: as in `find_head_learning_rate`; ``seed``: the sweep's data orders and
    dropout (`templates.training.finder.find_learning_rate`).
    """
    from templates.training.finder import find_learning_rate

    if from_layer == "default":
        from_layer = transfer.fine_tune_from
    unfreeze(transfer, from_layer)
    try:
        return find_learning_rate(transfer.model, train_data, steps=steps,
                                  end_learning_rate=end_learning_rate, rule=rule, seed=seed)
    finally:
        transfer.backbone.trainable = False
