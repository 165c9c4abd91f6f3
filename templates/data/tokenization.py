"""The one tokenisation rule shared by vocabularies, word2vec corpora and GloVe lookups.

GloVe's vocabulary comes from the Stanford tokenizer: lower-case words with
punctuation split off, apostrophes and hyphens kept inside tokens ("n't", "'s",
"well-made"). `tokenize` applies that rule in Python (for gensim corpora);
`standard_tokens` applies it exactly as TensorFlow's `TextVectorization` does with
`templates.data.texts.standardize_text` (ASCII letters lower-cased, ASCII whitespace
splits), so a vocabulary built in NumPy gives the same token ids on every backend.
"""

from __future__ import annotations

import re
import string

# Punctuation that is split off words. Apostrophes and hyphens stay inside tokens.
PUNCTUATION = r"""([!"#$%&()*+,./:;<=>?@\[\\\]^_`{|}~])"""
_PUNCTUATION = re.compile(PUNCTUATION)
# tf.strings.lower lower-cases ASCII letters only; TensorFlow splits on ASCII whitespace.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ASCII_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text``, split punctuation off, and split on whitespace."""
    return _PUNCTUATION.sub(r" \1 ", text.lower()).split()


def standard_tokens(text: str) -> list[str]:
    """``text``'s tokens as the vectoriser sees them (`tokenize`'s rule, TensorFlow's
    ASCII-only lower-casing and whitespace)."""
    spaced = _PUNCTUATION.sub(r" \1 ", text.translate(_ASCII_LOWER))
    return [token for token in _ASCII_WHITESPACE.split(spaced) if token]


def standard_token_counts(texts) -> list[int]:
    """How many `standard_tokens` each text has: its length before a vectoriser's cut."""
    return [len(standard_tokens(str(text))) for text in texts]
