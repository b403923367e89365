"""The model's tokenizer in the gateway (tokenizer.json only, no torch): `usage` counts, long texts cut to what the
model reads (encode_inputs.TextWindow) before they are counted or sent on, the texts over that limit (for
AUTO_TRUNCATE=false), and TEI's /tokenize."""

from __future__ import annotations

from encode_inputs import VERIFY_SAMPLE, TextWindow, over_the_limit
from model_info import model_file


class TokenCounter:
    """Counts the tokens the encoder sees per text: with special tokens, truncated to `max_tokens` (the model's
    max_seq_length, model_info.py)."""

    def __init__(self, model: str, max_tokens: int) -> None:
        self.max_tokens = max_tokens
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

    def over_limit(self, texts: list[str]) -> list[tuple[int, int | None]]:
        """(index, token count) of each text longer than the model reads; the count is None when only a long
        text's head was counted (encode_inputs.over_the_limit bounds the work as the cut does). Empty without a
        tokenizer (the gateway refuses to start with AUTO_TRUNCATE=false then)."""
        if self._tokenizer is None:
            return []
        tokenizer = self._tokenizer

        def count(text: str) -> int:
            return len(tokenizer.encode(text).ids)

        found = []
        for index, text in enumerate(texts):
            over, tokens = over_the_limit(text, self.max_tokens, count, self.window)
            if over:
                found.append((index, tokens))
        return found

    def tokens(self, text: str, add_special_tokens: bool) -> list[dict]:
        """TEI's /tokenize entry for `text`: each token's id, text, whether it is special, and its character span."""
        if self._tokenizer is None:
            raise LookupError('no tokenizer.json for the model in the gateway')
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        parts = zip(encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask, strict=True)
        return [
            {
                'id': token_id,
                'text': token,
                'special': bool(special),
                'start': None if special else start,
                'stop': None if special else stop,
            }
            for token_id, token, (start, stop), special in parts
        ]
