"""How a user spells a pretrained image backbone: ``NAME[,option=value...][@CUT]``.

One string names everything `templates.models.pretrained.pretrained_model` needs to build a
candidate source model, so a command line can list several of them side by side::

    MobileNet,alpha=0.25                   # keras.applications, ImageNet weights
    MobileNet,alpha=0.25@-30               # the same, cut 30 layers from the top
    MobileNet,alpha=0.25@conv_pw_6_relu    # ... or after a named layer
    MobileNet,alpha=0.25,weights=none      # random weights (a control)
    MobileNet,alpha=0.25,image_size=128    # another input size
    keras_hub:/path/to/preset_folder       # a keras-hub preset (name or folder)
    tfhub:HANDLE_OR_DIR                    # a TF-Hub image module

Options are ``alpha``, ``weights`` (``imagenet``, ``none`` or a weights file) and
``image_size``; an option missing from the spelling takes the default given to
`parse_backbone` (the recipes' ``--alpha``, ``--weights`` and ``--image-size``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from templates.data.errors import CookbookError

OPTIONS = ("alpha", "weights", "image_size")


@dataclasses.dataclass(frozen=True)
class BackboneChoice:
    """One spelled backbone: the name, its options and where to cut it.

    Attributes:
        spelling: What the user wrote (the candidate's name in a selection table).
        name: The registry name, ``keras_hub:...`` or ``tfhub:...``.
        alpha: Width multiplier (MobileNet families), or ``None``.
        weights: ``"imagenet"``, ``None`` (random) or a weights file.
        image_size: Square input side, or ``None`` (the family's default).
        cut_at: A layer name or index (``-30``: 30 layers from the top), or ``None``.
    """

    spelling: str
    name: str
    alpha: float | None = None
    weights: str | None = "imagenet"
    image_size: int | None = None
    cut_at: str | int | None = None

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments for `templates.models.pretrained.pretrained_model`."""
        return {"backbone": self.name, "weights": self.weights, "alpha": self.alpha,
                "image_size": self.image_size, "cut_at": self.cut_at}

    @property
    def weights_name(self) -> str:
        """``"imagenet"``, ``"none"`` or the weights file, as written in metrics."""
        return "none" if self.weights is None else str(self.weights)


def _cut(text: str) -> str | int:
    return int(text) if text.lstrip("-").isdigit() else text


def parse_backbone(spelling: str, alpha: float | None = None,
                   weights: str | None = "imagenet",
                   image_size: int | None = None) -> BackboneChoice:
    """Read ``NAME[,option=value...][@CUT]`` (see the module docstring).

    Args:
        spelling: The spelled backbone.
        alpha, weights, image_size: Defaults for options the spelling leaves out
            (``weights="none"`` means random weights).

    Raises:
        ValueError: for an unknown option, a malformed ``option=value`` or a bad value.
    """
    text = str(spelling).strip()
    if not text:
        raise CookbookError("A backbone spelling is empty; write NAME[,option=value...][@CUT].")
    cut_at: str | int | None = None
    head, separator, tail = text.rpartition("@")
    # A cut follows the last "@" unless that "@" belongs to a path or an option value.
    _, _, location = text.partition(":")
    if separator and os.path.exists(os.path.expanduser(location or text)):
        separator = ""  # a preset or module folder whose name holds an "@"
    if separator and head and tail and "/" not in tail and "," not in tail and "=" not in tail:
        text, cut_at = head, _cut(tail)
    elif separator and not tail and not head.endswith("/"):
        raise CookbookError(f"Backbone {spelling!r}: nothing after '@' (write @-30 or "
                            "@LAYER_NAME to cut the backbone).")
    name, *pairs = text.split(",")
    if name.startswith(("keras_hub:", "tfhub:")) and pairs and "=" not in pairs[0]:
        raise CookbookError(f"Backbone {spelling!r}: options follow the name as "
                            "option=value.")
    options: dict[str, Any] = {"alpha": alpha, "weights": weights, "image_size": image_size}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not value.strip():
            raise CookbookError(f"Backbone {spelling!r}: {pair!r} is not option=value "
                                f"(options: {', '.join(OPTIONS)}).")
        if key not in OPTIONS:
            raise CookbookError(f"Backbone {spelling!r}: unknown option {key!r}; the options "
                                f"are {', '.join(OPTIONS)}.")
        options[key] = value.strip()
    try:
        alpha_value = None if options["alpha"] is None else float(options["alpha"])
        size_value = None if options["image_size"] is None else int(options["image_size"])
    except ValueError as error:
        raise CookbookError(f"Backbone {spelling!r}: {error}.") from None
    weights_value = options["weights"]
    if weights_value is not None and str(weights_value).lower() == "none":
        weights_value = None
    elif weights_value is not None and str(weights_value).lower() == "imagenet":
        weights_value = "imagenet"
    elif weights_value is not None:
        weights_value = os.path.expanduser(str(weights_value))
    return BackboneChoice(spelling=str(spelling).strip(), name=name.strip(),
                          alpha=alpha_value, weights=weights_value, image_size=size_value,
                          cut_at=cut_at)
