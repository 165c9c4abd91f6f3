"""Texts to a transformer's inputs with a ``tokenizer.json``, on every Keras backend.

keras-hub's tokenizers are TensorFlow Text ops; a Hugging Face folder (and keras-hub's
``hf://`` handles) also carries ``tokenizer.json``, which Hugging Face's ``tokenizers``
library (Rust, no TensorFlow) reads. `TokenizerFile` turns texts into the packed inputs a
keras-hub text backbone takes (``token_ids``, ``padding_mask``, ``segment_ids``), with the
special tokens the file's post-processor adds (``[CLS] ... [SEP]`` for BERT), cut to a
sequence length. `TokenizerFile.save` writes the file with that length in it, so a recipe's
output folder carries its tokeniser beside ``model.keras`` and
`templates.export.predictor.Predictor` tokenises new texts the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from templates.data.errors import CookbookError

TOKENIZER_FILE = "tokenizer.json"


class TokenizerFile:
    """A ``tokenizer.json`` tokeniser: texts in, packed transformer inputs out.

    Args:
        path: The ``tokenizer.json`` file.
        sequence_length: Most tokens per text, special tokens included (longer texts are
            cut); ``None`` keeps the file's own truncation (512 when it has none).

    Raises:
        ValueError: the file is missing or is not a tokenizer file (naming it).
    """

    def __init__(self, path: str | os.PathLike, sequence_length: int | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError("Tokenising without TensorFlow needs the tokenizers package: "
                              "pip install -e \".[hub]\".") from None
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise CookbookError(f"No tokenizer file at {self.path!r}: a Hugging Face folder "
                                f"carries {TOKENIZER_FILE}, which the JAX and PyTorch backends "
                                "tokenise with.")
        try:
            self.tokenizer = Tokenizer.from_file(self.path)
        except Exception as error:  # the Rust library raises its own exception type
            raise CookbookError(f"{self.path}: not a tokenizer file ({error}).") from None
        truncation = self.tokenizer.truncation or {}
        self.sequence_length = int(sequence_length or truncation.get("max_length") or 512)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.sequence_length)
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = int(pad) if pad is not None else 0

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"token_ids", "padding_mask", "segment_ids"}``, each ``(texts,
        sequence_length)``: int32 ids padded with the pad id, a boolean mask of the real
        tokens, int32 segment ids."""
        encodings = self.tokenizer.encode_batch([str(text) for text in texts])
        shape = (len(encodings), self.sequence_length)
        ids = np.full(shape, self.pad_id, dtype="int32")
        mask = np.zeros(shape, dtype=bool)
        segments = np.zeros(shape, dtype="int32")
        for row, encoding in enumerate(encodings):
            count = len(encoding.ids)
            ids[row, :count] = encoding.ids
            mask[row, :count] = True
            segments[row, :count] = encoding.type_ids
        return {"token_ids": ids, "padding_mask": mask, "segment_ids": segments}

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens of each text, special tokens included, before any cut."""
        self.tokenizer.no_truncation()
        try:
            return np.asarray([len(encoding.ids) for encoding in
                               self.tokenizer.encode_batch([str(text) for text in texts])])
        finally:
            self.tokenizer.enable_truncation(self.sequence_length)

    def save(self, path: str | os.PathLike) -> str:
        """Write the tokeniser (its sequence length included) to ``path``, atomically."""
        from templates.data.files import write_text

        path = os.fspath(path)
        write_text(path, self.tokenizer.to_str())
        return path
