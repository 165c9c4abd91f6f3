"""The one tokenisation rule shared by vocabularies, word2vec corpora and GloVe lookups.

GloVe's vocabulary comes from the Stanford tokenizer: lower-case words with
punctuation split off, apostrophes and hyphens kept inside tokens ("n't", "'s",
"well-made"). `tokenize` applies that rule in Python (for gensim corpora);
`templates.data.texts.standardize_text` applies the same pattern in TensorFlow (inside
the model's `TextVectorization`), so both sides see the same tokens.
"""

from __future__ import annotations

import re

# Punctuation that is split off words. Apostrophes and hyphens stay inside tokens.
PUNCTUATION = r"""([!"#$%&()*+,./:;<=>?@\[\\\]^_`{|}~])"""
_PUNCTUATION = re.compile(PUNCTUATION)


def tokenize(text: str) -> list[str]:
    """Lower-case ``text``, split punctuation off, and split on whitespace."""
    return _PUNCTUATION.sub(r" \1 ", text.lower()).split()
