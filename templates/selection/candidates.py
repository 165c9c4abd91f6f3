"""Candidate image backbones for source selection, from their spellings.
"""

from __future__ import annotations

import dataclasses

from templates.models.backbone_spelling import BackboneChoice, parse_backbone


def image_classifier_head(choice: BackboneChoice):
    """For LEEP: a function from a built candidate to a model from its 0..255 images
    to the source task's (ImageNet's) class probabilities, or ``None`` when the
    candidate has no such head (cut, random or file weights, keras-hub, TF-Hub), or
    when Keras cannot load the family's classifier weights (offline without them)."""
    if (choice.cut_at is not None or choice.weights != "imagenet"
            or choice.name.startswith(("keras_hub:", "tfhub:"))):
        return None

    def classifier(transfer):
        import keras

        from templates.models.backbones import get_backbone_spec

        spec = get_backbone_spec(choice.name)
        size = int(transfer.model.input_shape[1])
        options = {"alpha": choice.alpha} if choice.alpha is not None else {}
        try:
            top = spec.constructor(include_top=True, weights="imagenet",
                                   input_shape=(size, size, 3), **options)
        except Exception as error:  # offline without the file, or no head at this size
            print(f"  LEEP: Keras has no ImageNet classifier for {choice.spelling} here "
                  f"({type(error).__name__}); LEEP left out.")
            return None
        inputs = keras.Input(transfer.model.input_shape[1:])
        x = transfer.preprocessing(inputs) if transfer.preprocessing is not None else inputs
        return keras.Model(inputs, top(x), name="source_classifier")

    return classifier


def image_candidates(spellings, batches_for_size, alpha=None, weights="imagenet",
                     image_size=None, **model_options):
    """`templates.selection.ranking.Candidate` objects for spelled image backbones.

    Args:
        spellings: ``NAME[,option=value...][@CUT]`` strings (`parse_backbone`).
        batches_for_size: ``image_size -> (train, validation[, test])`` batches at that
            size (cache them, so candidates of one size share them; test is not read).
        alpha, weights, image_size: Defaults for options a spelling leaves out.
        **model_options: Passed to `templates.models.pretrained.pretrained_model`
            (``num_classes``, ``fine_tune_from``, ``class_names``...).
    """
    from templates.models.pretrained import pretrained_model
    from templates.selection.ranking import Candidate

    candidates = []
    for spelling in spellings:
        choice = parse_backbone(spelling, alpha, weights, image_size)

        def build(choice=choice):
            return pretrained_model(**choice.model_options(), **model_options)

        def data(transfer):
            return tuple(batches_for_size(int(transfer.model.input_shape[1])))[:2]

        candidates.append(Candidate(choice.spelling, build, data=data,
                                    source_classifier=image_classifier_head(choice),
                                    details={"choice": dataclasses.asdict(choice)}))
    return candidates
