"""The model's tokenizer in the gateway (tokenizer.json only, no torch): `usage` counts, and long texts cut to what
the model reads (encode_inputs.TextWindow) before they are counted or sent on."""

from __future__ import annotations

import json
import os

from encode_inputs import VERIFY_SAMPLE, TextWindow


class TokenCounter:
    """Counts the tokens the encoder sees per text: with special tokens, truncated to the model's maximum (its
    sentence_bert_config.json `max_seq_length`, as sentence-transformers reads it; `max_tokens` when it has none)."""

    def __init__(self, model: str, max_tokens: int) -> None:
        self.max_tokens = model_max_seq_length(model) or max_tokens
        self._tokenizer = None
        self.window: TextWindow | None = None
        try:
            from tokenizers import Tokenizer

            found = model_file(model, 'tokenizer.json')
            if found:
                self._tokenizer = Tokenizer.from_file(found)
                self._tokenizer.no_truncation()  # truncation and padding are applied by hand below
                self._tokenizer.no_padding()
        except Exception:  # noqa: BLE001 - usage then falls back to a whitespace count, logged by the caller
            self._tokenizer = None
        if self._tokenizer is not None:
            window = TextWindow(self._tokenizer, self.max_tokens)
            self.window = window if window.verified(VERIFY_SAMPLE) else None

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def cut(self, texts: list[str]) -> list[str]:
        """`texts`, each cut to what the model reads (unchanged without a tokenizer: the encoder cuts them)."""
        if self.window is None:
            return texts
        return [self.window.cut(text) for text in texts]

    def count(self, texts: list[str]) -> int:
        """The tokens of `texts` (cut by `cut` first: counting a whole 8 MB text took a GiB)."""
        if self._tokenizer is None:
            # An estimate, bounded: split at most max_tokens times, whatever the text's size.
            return sum(min(len(text.split(None, self.max_tokens)) + 2, self.max_tokens) for text in texts)
        encodings = self._tokenizer.encode_batch(texts)
        return sum(min(len(encoding.ids), self.max_tokens) for encoding in encodings)


def model_file(model: str, name: str) -> str | None:
    """The path of one of the model's files: in its directory, or in the Hugging Face cache; None if absent."""
    if os.path.isdir(model):
        found = os.path.join(model, name)
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, name)
    return found if isinstance(found, str) and os.path.exists(found) else None


def model_max_seq_length(model: str) -> int | None:
    """The tokens per text the model reads (sentence-transformers' max_seq_length), or None if not found."""
    try:
        found = model_file(model, 'sentence_bert_config.json')
        return int(json.load(open(found))['max_seq_length']) if found else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
