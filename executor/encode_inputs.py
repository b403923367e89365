"""What the encoder accepts from a caller, checked by one set of rules wherever a request comes in.

Jina-free and torch-free: the executor imports it, and so does the gateway (its config.yml lists
../executor/encode_inputs.py; the gateway image copies it to the same relative place), so an HTTP request refused by
the gateway and a gRPC request refused by the executor get the same words.

- `check_parameters`: the per-request `parameters` of /encode (`batch_size`, `normalize`, `prompt_name`), typed and
  bounded. A caller
  must not choose the encoder's forward pass beyond what the server allows, nor pass "false" and get true.
- `describe_bad_text`: a text that is not a non-empty string of valid Unicode (a lone surrogate cannot be encoded as
  UTF-8: protobuf raised UnicodeEncodeError for it, and a joined batch failed with it).
- `TextWindow`: cuts a text longer than the model reads to a prefix that gives the model the same tokens, before
  anything tokenises the whole of it (an 8 MB text tokenised whole took 3.6 s of the event loop and a GiB of memory).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# The largest `parameters.batch_size` (texts per forward pass) a caller may ask for. The memory of a pass grows with
# it (batch x tokens x hidden size per layer); 512 x 256 tokens is ~0.5 GB of activations for MiniLM on CPU.
MAX_BATCH_SIZE = int(os.environ.get('MAX_BATCH_SIZE', '512'))
# Texts of up to this many characters per token the model reads are never tokenised for cutting: no text that short
# can need it, and the hot path stays a length check (256 tokens: 4,096 characters).
CHARS_PER_TOKEN_UNCUT = 16
KNOWN_PARAMETERS = ('batch_size', 'normalize', 'prompt_name')
MAX_PROMPT_NAME_CHARS = 128
# How many offending ids or indexes an error message lists before it says "and N more".
MAX_IDS_IN_ERROR = 10


class InputProblem(ValueError):
    """A request the encoder refuses; the message names the field and what it takes."""


@dataclass(frozen=True)
class EncodeOptions:
    """Per-request overrides of the encoder's defaults (None: the executor's own setting). Hashable: the gateway
    joins requests into one encoder request only when their options are equal."""

    batch_size: int | None = None
    normalize: bool | None = None
    prompt_name: str | None = None  # one of the model's prompts, put before each text (checked against the model)

    def as_parameters(self) -> dict:
        fields = (('batch_size', self.batch_size), ('normalize', self.normalize), ('prompt_name', self.prompt_name))
        return {name: value for name, value in fields if value is not None}


def check_parameters(
    parameters, ignore: frozenset[str] = frozenset(), max_batch_size: int | None = None
) -> EncodeOptions:
    """The options in `parameters`, or InputProblem naming what is wrong. `ignore`: keys Jina adds itself (its
    `__results__`, and the executor's own name, whose dict Jina has already merged into the others)."""
    if parameters is None:
        return EncodeOptions()
    if not isinstance(parameters, Mapping):
        raise InputProblem(f'`parameters` must be an object, not {json_kind(parameters)}: e.g. {{"normalize": true}}')
    unknown = sorted(str(name) for name in parameters if name not in KNOWN_PARAMETERS and name not in ignore)
    if unknown:
        # Named as listed() names ids, each cut to 40 characters: a body of 2,000 unknown keys was echoed whole.
        raise InputProblem(
            f'unknown `parameters` {listed([name[:40] for name in unknown])}: this encoder takes '
            f'{", ".join(KNOWN_PARAMETERS)}'
        )
    limit = MAX_BATCH_SIZE if max_batch_size is None else max_batch_size
    batch_size = parameters.get('batch_size')
    if 'batch_size' in parameters:  # null too: "unset" is leaving it out
        # A gRPC caller's parameters arrive as a protobuf Struct, where every number is a float: 8 comes as 8.0.
        integral = isinstance(batch_size, int) or (isinstance(batch_size, float) and batch_size.is_integer())
        if isinstance(batch_size, bool) or not integral or not 1 <= batch_size <= limit:
            raise InputProblem(
                f'`parameters.batch_size` must be an integer from 1 to {limit} (texts per forward pass, '
                f'MAX_BATCH_SIZE), not {shown(batch_size)}'
            )
        batch_size = int(batch_size)
    normalize = parameters.get('normalize')
    if 'normalize' in parameters and not isinstance(normalize, bool):
        raise InputProblem(f'`parameters.normalize` must be true or false (a JSON boolean), not {shown(normalize)}')
    prompt_name = parameters.get('prompt_name')
    if prompt_name is not None and (not isinstance(prompt_name, str) or len(prompt_name) > MAX_PROMPT_NAME_CHARS):
        raise InputProblem(f'`parameters.prompt_name` must be the name of one of the model\'s prompts (a string of '
                           f'at most {MAX_PROMPT_NAME_CHARS} characters), not {shown(prompt_name)}')  # fmt: skip
    return EncodeOptions(batch_size=batch_size, normalize=normalize, prompt_name=prompt_name)


def describe_bad_text(text) -> str | None:
    """What is wrong with `text` as an encoder input, or None when it is a non-empty string of valid Unicode."""
    if text is None:
        return 'no text'
    if not isinstance(text, str):
        return f'text is not a string ({type(text).__name__})'
    if not text.strip():
        return 'empty text'
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return 'text is not valid Unicode'  # a lone surrogate; no position, so that messages group texts by kind
    return None


def untruncated_copy(tokenizer):
    """A copy of a `tokenizers.Tokenizer` with no truncation or padding of its own, set once here and only read
    after: safe to share between threads. The model's own tokenizer is not (its settings are rewritten by each call
    with other ones, and `tokenizers` raises 'Already borrowed' in a thread that uses it meanwhile)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


class TextWindow:
    """Cuts texts to what the model reads, without changing the tokens it sees.

    The cut is made at the start of a word that begins at
    or after token `max_tokens` of a prefix: the words before it are whole, the tokenizer splits words independently
    (BERT's WordPiece, sentencepiece and byte-level BPE alike), so the first `max_tokens` tokens of the cut text are
    those of the full text, and the model, which truncates at fewer (its max_seq_length minus the special tokens),
    sees exactly the same input. Checked against the full text in tests/unit/test_request_checks.py, and at start-up
    by `verified()`.

    Only texts over `max_tokens * CHARS_PER_TOKEN_UNCUT` characters are looked at; the tokenizing is of a prefix
    that grows 4x at a time until it holds enough words, so a huge text costs a few of its first kilobytes.
    """

    def __init__(self, tokenizer, max_tokens: int) -> None:
        """`tokenizer`: a `tokenizers.Tokenizer` (the model's tokenizer.json); `max_tokens`: at least the tokens the
        model reads per text (its max_seq_length)."""
        self._tokenizer = untruncated_copy(tokenizer)
        self.max_tokens = max_tokens
        self.uncut_chars = max_tokens * CHARS_PER_TOKEN_UNCUT

    def needs_look(self, text: str) -> bool:
        return len(text) > self.uncut_chars

    def cut(self, text: str) -> str:
        if not self.needs_look(text):
            return text
        window = self.uncut_chars
        while window < len(text):
            encoding = self._tokenizer.encode(text[:window], add_special_tokens=False)
            start = self._first_word_start_after_limit(encoding)
            if start is not None:
                return text[:start]
            window *= 4
        return text  # never enough words in it: the model reads it all (its tokens are below max_tokens)

    def _first_word_start_after_limit(self, encoding) -> int | None:
        """The character offset where the first word starting at token index >= max_tokens begins, provided that
        word is not the prefix's last (which the prefix may have cut in two)."""
        words, offsets = encoding.word_ids, encoding.offsets
        if len(words) <= self.max_tokens:
            return None
        last_word = words[-1]
        for index in range(self.max_tokens, len(words)):
            word = words[index]
            if word == last_word:
                return None
            if word is not None and word != words[index - 1]:
                return offsets[index][0]
        return None

    def verified(self, sample: str) -> bool:
        """Whether cutting `sample` (a text long enough to be cut) keeps its first max_tokens tokens: a check at
        start-up that this model's tokenizer splits words the way the cut assumes."""
        cut = self.cut(sample)
        full = self._tokenizer.encode(sample, add_special_tokens=False).ids[: self.max_tokens]
        return (
            len(cut) < len(sample)
            and self._tokenizer.encode(cut, add_special_tokens=False).ids[: self.max_tokens] == full
        )


# A long text of words, punctuation and digits, for TextWindow.verified at start-up.
VERIFY_SAMPLE = ' '.join(f'word{i}, (text) {i * 7}.' for i in range(2_000))


def over_the_limit(text: str, max_tokens: int, count_tokens, window: TextWindow | None) -> tuple[bool, int | None]:
    """Whether `text` holds more than `max_tokens` tokens (special tokens included), and how many when that was
    counted. The cost is bounded as the cut's is: a text is tokenised whole only up to max_tokens * 16 characters;
    past that, its first such characters are counted (more than the limit: over, count not told), else the cut
    decides. `count_tokens(text)`: the model's tokenizer, with special tokens."""
    if len(text) * 4 + 8 <= max_tokens:  # no tokenizer makes more tokens than UTF-8 bytes, plus a few specials
        return False, None
    head_chars = max_tokens * CHARS_PER_TOKEN_UNCUT
    tokens = count_tokens(text[:head_chars])
    if len(text) <= head_chars:
        return tokens > max_tokens, tokens
    if tokens > max_tokens:
        return True, None
    return (window is not None and window.cut(text) != text), None


def json_kind(value) -> str:
    """What a JSON value is, in words: 'an object', 'a list', 'a number', ..."""
    return {dict: 'an object', list: 'a list', str: 'a string', bool: 'a boolean', type(None): 'null'}.get(
        type(value), 'a number' if isinstance(value, (int, float)) else type(value).__name__
    )


def shown(value) -> str:
    """A value as a message may quote it: at most 40 characters; objects and lists by their kind."""
    shown = repr(value) if not isinstance(value, (dict, list)) else json_kind(value)
    return shown if len(shown) <= 40 else shown[:40] + '...'


def listed(names: list[str]) -> str:
    """The first MAX_IDS_IN_ERROR of `names`, then "and N more"."""
    more = f' and {len(names) - MAX_IDS_IN_ERROR} more' if len(names) > MAX_IDS_IN_ERROR else ''
    return ', '.join(names[:MAX_IDS_IN_ERROR]) + more
