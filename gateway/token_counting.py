"""The model's tokenizer in the gateway (tokenizer.json only, no torch): `usage` counts, and long texts cut to what
the model reads (encode_inputs.TextWindow) before they are counted or sent on."""

from __future__ import annotations

import os

from encode_inputs import VERIFY_SAMPLE, TextWindow


class TokenCounter:
    """Counts the tokens the encoder sees per text: with special tokens, truncated to the model's maximum."""

    def __init__(self, model: str, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._tokenizer = None
        self.window: TextWindow | None = None
        try:
            from huggingface_hub import try_to_load_from_cache
            from tokenizers import Tokenizer

            path = model if os.path.isdir(model) else None
            found = os.path.join(path, 'tokenizer.json') if path else try_to_load_from_cache(model, 'tokenizer.json')
            if isinstance(found, str) and os.path.exists(found):
                self._tokenizer = Tokenizer.from_file(found)
                self._tokenizer.no_truncation()  # truncation and padding are applied by hand below
                self._tokenizer.no_padding()
        except Exception:  # noqa: BLE001 - usage then falls back to a whitespace count, logged by the caller
            self._tokenizer = None
        if self._tokenizer is not None:
            window = TextWindow(self._tokenizer, max_tokens)
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
