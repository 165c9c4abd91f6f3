"""What a class name may be: one visible line, so ``labels.txt`` reads back as written.

Class names come from folder names, CSV cells and text labels. Each is written as one
line of ``labels.txt``, which `recipes.predict` reads back line by line, so a name
holding a line break (``\\n``, ``\\r`` or any other that ``str.splitlines`` honours) or a
control character would come back as another name, or as two. The data loaders check
the names as they read them, before any training.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from templates.data.errors import CookbookError


def bad_class_name(name: str) -> str | None:
    """Why ``name`` cannot be a class name, or ``None`` when it can."""
    if not name.strip():
        return "empty"
    if len(name.splitlines()) != 1 or name.splitlines()[0] != name:
        return "holds a line break"
    if any(unicodedata.category(character) == "Cc" for character in name):
        return "holds a control character"
    return None


def check_class_names(names: Sequence[str], where: str) -> list[str]:
    """Return ``names`` as strings, or raise naming ``where`` and every bad one.

    Raises:
        CookbookError: a name that is empty or holds a line break or control character.
    """
    names = [str(name) for name in names]
    bad = [(name, bad_class_name(name)) for name in names if bad_class_name(name)]
    if bad:
        listed = "; ".join(f"{name!r} ({reason})" for name, reason in bad)
        raise CookbookError(f"{where}: class names must be one visible line each, so "
                            f"labels.txt reads back as written; rename {listed}.")
    return names
