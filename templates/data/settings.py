"""Settings as data: a dataclass field that is also a command-line flag.

A field made with `setting` keeps its default, help text and range (or choices) beside
it, so one definition gives the library's default and the recipes' flag
(`templates.cli.add_settings_arguments`): a setting has one name and one default.
`templates.training.plan.TransferPlan` is built this way, as are the word-vector and
text-classifier settings of the GloVe recipe.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, help: str, choices: tuple | None = None, **bounds: Any):
    """A dataclass field that is also a command-line flag: its default, help, and either
    its ``choices`` or its bounds (``minimum``/``maximum`` inclusive, ``above``/``below``
    exclusive) and ``metavar``, kept beside the field as its metadata."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, **bounds})


def flag_fields(settings: type) -> list[dataclasses.Field]:
    """The fields of the dataclass ``settings`` that are command-line flags (made with
    `setting`)."""
    return [field for field in dataclasses.fields(settings) if "help" in field.metadata]


def field_kind(field: dataclasses.Field) -> type:
    """The plain type of a setting (``bool``, ``int``, ``float`` or ``str``), read from
    its annotation (``int | None`` -> ``int``)."""
    annotation = field.type if isinstance(field.type, str) else getattr(
        field.type, "__name__", str(field.type))
    first = annotation.split("|")[0].strip()
    return {"bool": bool, "int": int, "float": float}.get(first, str)
