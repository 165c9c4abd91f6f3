"""Texts to token ids in NumPy: one vocabulary for every Keras backend.

`Vocabulary` holds the tokens (id ``i`` is ``tokens[i]``; 0 pads, 1 stands for
unknown words) and the length every text is cut or padded to. It is built the way
`keras.layers.TextVectorization.adapt` builds one (most frequent first, ties broken
by the tokens' bytes, highest first), so on TensorFlow the vectoriser inside the saved
model gives the same ids; on JAX or PyTorch the ids are made here, and the recipe's
output folder carries the vocabulary as ``vocabulary.txt`` (line ``i`` is id ``i``) for
`templates.export.predictor.Predictor`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np

from templates.data.errors import CookbookError
from templates.data.tokenization import standard_tokens

PADDING, UNKNOWN = "", "[UNK]"
VOCABULARY_FILE = "vocabulary.txt"


@dataclasses.dataclass
class Vocabulary:
    """Tokens and a sequence length: texts in, ``(texts, sequence_length)`` int32 ids out.

    Attributes:
        tokens: Id ``i`` is ``tokens[i]``; ``tokens[0]`` is ``""`` (padding) and
            ``tokens[1]`` ``"[UNK]"`` (every word not in the vocabulary).
        sequence_length: Tokens kept per text (the first ones); shorter texts are padded.
    """

    tokens: list[str]
    sequence_length: int

    def __post_init__(self):
        if list(self.tokens[:2]) != [PADDING, UNKNOWN]:
            raise CookbookError(f"A vocabulary starts with {PADDING!r} (padding) and "
                                f"{UNKNOWN!r}; got {list(self.tokens[:2])}.")
        if self.sequence_length < 1:
            raise CookbookError(f"sequence_length must be at least 1; got {self.sequence_length}.")
        self._index = {token: position for position, token in enumerate(self.tokens)}

    @classmethod
    def from_texts(cls, texts: Sequence[str], sequence_length: int | None = None,
                   max_tokens: int | None = None, extra_vocabulary: Iterable[str] = (),
                   length_percentile: float = 95.0) -> Vocabulary:
        """The vocabulary of ``texts`` (see `templates.data.texts.build_vectorizer`)."""
        if not len(texts):
            raise CookbookError("Cannot build a vocabulary from no texts.")
        tokenized = [standard_tokens(text) for text in texts]
        counts = collections.Counter(token for tokens in tokenized for token in tokens)
        counts.pop(PADDING, None)
        counts.pop(UNKNOWN, None)
        # TextVectorization's order: count, then the UTF-8 bytes, both descending.
        learned = sorted(counts, key=lambda token: (counts[token], token.encode("utf-8")),
                         reverse=True)
        if max_tokens:
            learned = learned[:max(0, max_tokens - 2)]
        if sequence_length is None:
            lengths = [len(tokens) for tokens in tokenized]
            sequence_length = max(8, int(np.ceil(np.percentile(lengths, length_percentile))))
        tokens = [PADDING, UNKNOWN, *learned]
        seen = set(tokens)
        for word in extra_vocabulary:
            if word and word not in seen and not any(character.isspace() for character in word):
                tokens.append(word)
                seen.add(word)
        return cls(tokens, int(sequence_length))

    def get_vocabulary(self) -> list[str]:
        """The tokens (`keras.layers.TextVectorization`'s name for them)."""
        return list(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids of ``texts``, shape ``(len(texts), sequence_length)``, int32."""
        ids = np.zeros((len(texts), self.sequence_length), dtype=np.int32)
        for row, text in enumerate(texts):
            found = [self._index.get(token, 1)
                     for token in standard_tokens(str(text))[:self.sequence_length]]
            ids[row, :len(found)] = found
        return ids

    def save(self, path: str | os.PathLike) -> str:
        """Write the tokens, one per line (line ``i`` is id ``i``), atomically."""
        from templates.data.files import write_text

        path = os.fspath(path)
        write_text(path, "\n".join(self.tokens) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, sequence_length: int) -> Vocabulary:
        """Read a `save`d vocabulary; ``sequence_length`` is the model's input length.

        Raises:
            ValueError: the file does not start with the padding and unknown tokens.
        """
        path = os.fspath(path)
        with open(path, encoding="utf-8") as handle:
            tokens = handle.read().split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        try:
            return cls(tokens, int(sequence_length))
        except ValueError as error:
            raise CookbookError(f"{path}: not a vocabulary file ({error})") from None
