"""What the served model is, read from its own files (the Hugging Face cache the encoder loads from, or a local model
directory), never from fixed values: its name, the tokens per text it reads, the dimension of its embeddings,
whether they come normalised, and its prompts. Jina-free and torch-free, as the gateway is.

The same files decide these in sentence-transformers: `sentence_bert_config.json` (`max_seq_length`),
`modules.json` and each module's `config.json` (the output dimension: Transformer, Pooling, Dense; Normalize),
`config_sentence_transformers.json` (`prompts`, `default_prompt_name`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

# sentence-transformers (5 and later) gives every model the prompt names `query` and `document`, empty unless the
# model's config sets them (its encode_query / encode_document use them): a client may send them to any model.
SENTENCE_TRANSFORMERS_PROMPTS = {'query': '', 'document': ''}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    max_tokens: int  # tokens per text the model reads, special tokens included
    dimension: int | None  # None: the files do not say (a module this reader does not know)
    normalized: bool  # the model's last modules include Normalize: its embeddings have unit length
    prompts: dict[str, str] = field(default_factory=dict)  # prompt name -> the text put before each input
    default_prompt_name: str | None = None
    revision: str | None = None  # the cache snapshot's commit, when loaded from the cache
    pooling: str | None = None  # the Pooling module's mode (mean, cls, ...), for TEI's /info
    # Shorter dimensions the deployment serves (MATRYOSHKA_DIMENSIONS), for a model trained for them: the first
    # `d` values, normalised again when the model's embeddings are unit length.
    matryoshka_dimensions: tuple[int, ...] = ()
    # False for a model whose Pooling leaves the prompt's tokens out (include_prompt: false, INSTRUCTOR-style): this
    # server puts a prompt before the text, so such a model's non-empty prompts are refused, not served wrong.
    prompt_pooled: bool = True

    def prompt(self, name: str | None) -> str:
        """The text of prompt `name` (None: the default prompt, or none); KeyError for a name the model lacks."""
        name = name if name is not None else self.default_prompt_name
        if name is None:
            return ''
        prompt = self.prompts[name]
        if prompt and not self.prompt_pooled:
            raise KeyError(name)
        return prompt


def read_model_info(
    model: str, fallback_max_tokens: int, default_prompt_name: str | None = None, matryoshka_dimensions: str = ''
) -> ModelInfo:
    """The model's properties from its files; `fallback_max_tokens` when it has no sentence_bert_config.json.
    `default_prompt_name` (ENCODER_DEFAULT_PROMPT_NAME) overrides the model's own default; one the model lacks is
    refused at start (SystemExit naming the prompts it has), as are MATRYOSHKA_DIMENSIONS that are not shorter than
    the model's dimension."""
    settings = _json(model, 'config_sentence_transformers.json') or {}
    prompts = settings.get('prompts') or {}
    # A null prompt is no prompt, as sentence-transformers reads it.
    prompts = {str(k): '' if v is None else str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}
    prompts = {**SENTENCE_TRANSFORMERS_PROMPTS, **prompts}
    default = default_prompt_name or settings.get('default_prompt_name') or None
    if default is not None and default not in prompts:
        known = ', '.join(sorted(prompts)) or 'none'
        raise SystemExit(f'ENCODER_DEFAULT_PROMPT_NAME={default} is not a prompt of {model} (its prompts: {known})')
    dimension, normalized, pooling, prompt_pooled = _output(model)
    if not prompt_pooled and default is not None and prompts[default]:
        raise SystemExit(
            f"the default prompt {default} cannot be served: {model} pools without the prompt's tokens "
            '(include_prompt: false), which this server does not do; set no default prompt'
        )
    shorter = _dimensions(matryoshka_dimensions, dimension)
    return ModelInfo(
        prompt_pooled=prompt_pooled,
        matryoshka_dimensions=shorter,
        name=model,
        max_tokens=_max_seq_length(model) or fallback_max_tokens,
        dimension=dimension,
        normalized=normalized,
        prompts=prompts,
        default_prompt_name=default,
        revision=_revision(model),
        pooling=pooling,
    )


def _dimensions(listed: str, dimension: int | None) -> tuple[int, ...]:
    """MATRYOSHKA_DIMENSIONS ("256,128"): each a whole number below the model's dimension, or SystemExit."""
    values = []
    for item in (part.strip() for part in listed.split(',') if part.strip()):
        if not (item.isascii() and item.isdigit()) or not 0 < int(item) < (dimension or 0):
            raise SystemExit(
                f"MATRYOSHKA_DIMENSIONS: {item!r} is not a whole number between 0 and the model's dimension "
                f'({dimension or "unknown: its files do not state it"})'
            )
        values.append(int(item))
    return tuple(sorted(set(values), reverse=True))


POOLING_MODES = {
    'pooling_mode_cls_token': 'cls',
    'pooling_mode_mean_tokens': 'mean',
    'pooling_mode_max_tokens': 'max',
    'pooling_mode_mean_sqrt_len_tokens': 'mean_sqrt_len',
    'pooling_mode_weightedmean_tokens': 'weightedmean',
    'pooling_mode_lasttoken': 'lasttoken',
}


def _output(model: str) -> tuple[int | None, bool, str | None, bool]:
    """(dimension, normalised, pooling mode, whether pooling includes a prompt's tokens) after the model's last
    module, as sentence-transformers chains them. Pooling configs in both layouts: sentence-transformers before 6
    (word_embedding_dimension, pooling_mode_* flags) and from 6 (embedding_dimension, pooling_mode)."""
    modules = _json(model, 'modules.json')
    if not isinstance(modules, list):
        return None, False, None, True
    dimension, normalized, pooling, prompt_pooled = None, False, None, True
    for module in modules:
        kind = str(module.get('type', '')).rsplit('.', 1)[-1]
        config = _json(model, os.path.join(module.get('path') or '', 'config.json')) or {}
        if kind == 'Transformer':
            dimension = config.get('hidden_size') or config.get('d_model')
        elif kind == 'Pooling':
            declared = config.get('pooling_mode')
            modes = [name for key, name in POOLING_MODES.items() if config.get(key)]
            if declared:
                modes = [declared] if isinstance(declared, str) else [str(mode) for mode in declared]
            pooling = '+'.join(modes) or None
            base = config.get('word_embedding_dimension') or config.get('embedding_dimension')
            dimension = base * max(1, len(modes)) if isinstance(base, int) else None
            prompt_pooled = config.get('include_prompt', True) is not False
        elif kind == 'Dense':
            dimension = config.get('out_features')
        elif kind == 'Normalize':
            normalized = True
            continue
        elif kind not in ('Dropout', 'LayerNorm'):
            return None, False, pooling, prompt_pooled  # a module whose output this reader cannot tell
        normalized = False
    return (dimension if isinstance(dimension, int) else None), normalized, pooling, prompt_pooled


def model_file(model: str, name: str) -> str | None:
    """The path of one of the model's files: in its directory, or in the Hugging Face cache; None if absent."""
    if os.path.isdir(model):
        found = os.path.join(model, name)
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, name)
    return found if isinstance(found, str) and os.path.exists(found) else None


def _json(model: str, name: str):
    try:
        found = model_file(model, name)
        return json.load(open(found)) if found else None
    except (OSError, ValueError):
        return None


def _max_seq_length(model: str) -> int | None:
    """The tokens per text the model reads (sentence-transformers' max_seq_length), or None if not found."""
    try:
        return int(_json(model, 'sentence_bert_config.json')['max_seq_length'])
    except (TypeError, KeyError, ValueError):
        return None


def _revision(model: str) -> str | None:
    """The commit of the cache snapshot the model's files are in (snapshots/<commit>/modules.json)."""
    found = model_file(model, 'modules.json')
    if not found or os.path.isdir(model):
        return None
    return os.path.basename(os.path.dirname(found))
