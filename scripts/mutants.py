"""Mutation testing of the modules the unit tier tests: `make mutants` (mutmut), then a score per module.

mutmut names a mutant after its file's dotted path (`gateway/coalescer.py` -> `gateway.coalescer`) and activates it
only where the running function's `__module__` matches that name. The tests import the modules flat (`coalescer`,
with `gateway/` on sys.path), as the images do, so mutmut cannot run on the checkout as it is laid out. This
script stages a copy per module in .build/mutation/MODULE/: the mutated module flat in `src/` (mutmut strips `src.`,
so the names match), everything else where it was, minus that module, so that its import finds the mutated copy.
Nothing in the checkout changes.

    .venv/bin/python scripts/mutants.py              # all modules below; writes .build/mutation/scores.json
    .venv/bin/python scripts/mutants.py coalescer    # one module
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = REPO / '.build' / 'mutation'  # one folder per module: STAGES / 'coalescer', ...
VENV_BIN = Path(sys.executable).parent

# Module -> the unit tests that are its specification. Each module is a mutmut run of its own, so that a mutant runs
# only its module's tests that reached the mutated function (mutmut's stats); test_executor.py, which loads the model
# in every test, is left out: it made devices' 100 mutants take 13 minutes.
MODULES = {
    'coalescer': ('gateway', ['tests/unit/test_coalescer.py']),
    'request_checks': ('gateway', ['tests/unit/test_request_checks.py', 'tests/unit/test_request_refusals.py']),
    'discovery': ('gateway', ['tests/unit/test_discovery.py']),
    'devices': ('executor', ['tests/unit/test_devices.py']),
    'encode_inputs': ('executor', ['tests/unit/test_encode_inputs.py', 'tests/unit/test_request_checks.py']),
    'lanes': ('executor', ['tests/unit/test_lanes.py']),
}
# Exit codes mutmut records per mutant (mutmut/stats.py): 1 and 3 are kills, 0 a survivor.
KILLED = {1, 3}
SURVIVED = {0}
TIMEOUTS = {24, -24, 36, 152, 255}


def stage(module: str) -> Path:
    """A copy of the checkout for mutating `module`, with mutmut's settings; returns its folder."""
    folder, tests = MODULES[module]
    stage = STAGES / module
    if stage.exists():
        shutil.rmtree(stage)
    (stage / 'src').mkdir(parents=True)
    for name in ('gateway', 'executor', 'scripts', 'tests'):
        shutil.copytree(REPO / name, stage / name, ignore=shutil.ignore_patterns('__pycache__', '.schemathesis'))
    shutil.move(stage / folder / f'{module}.py', stage / 'src' / f'{module}.py')
    # pytest's settings without [tool.mutmut]: mutmut reads the setup.cfg written below.
    shutil.copy2(REPO / 'pyproject.toml', stage / 'pyproject.toml')
    assert '[tool.mutmut]' not in (stage / 'pyproject.toml').read_text(), 'keep mutmut settings in scripts/mutants.py'
    (stage / 'setup.cfg').write_text(
        '[mutmut]\n'
        'source_paths = src\n'
        'also_copy =\n    gateway\n    executor\n    scripts\n'
        'pytest_add_cli_args_test_selection =\n' + ''.join(f'    {test}\n' for test in tests) +
        # Needs two concurrent OpenVINO streams; a mutant run must not depend on the machine's spare cores.
        '    --deselect=tests/unit/test_lanes.py::test_openvino_streams_encode_concurrently_to_the_same_embeddings\n'
        'pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n'
        # torch, OpenVINO and grpc are not fork-safe after use: fork each mutant's run from a clean server process.
        'process_isolation = forkserver\n'
        'use_git_change_detection = false\n'
    )  # fmt: skip
    return stage


def score(stage: Path, module: str) -> dict:
    """Killed, survived, timeouts (a kill: the mutant hung the test), no tests, and the survivors' names."""
    meta = stage / 'mutants' / 'src' / f'{module}.py.meta'
    exit_codes = json.loads(meta.read_text())['exit_code_by_key'] if meta.exists() else {}
    counts = Counter()
    survivors = []
    for key, code in exit_codes.items():
        if code in KILLED:
            counts['killed'] += 1
        elif code in TIMEOUTS:
            counts['timeout'] += 1
        elif code in SURVIVED:
            counts['survived'] += 1
            survivors.append(key)
        elif code in (5, 33):
            counts['no tests'] += 1
            survivors.append(key)
        else:
            counts[f'other ({code})'] += 1
    total = sum(counts.values())
    caught = counts['killed'] + counts['timeout']
    return {
        'total': total, **counts, 'score': round(caught / total, 3) if total else None,
        'survivors': sorted(survivors),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('modules', nargs='*', metavar='MODULE', help=f'any of {", ".join(MODULES)} (default: all)')
    parser.add_argument('--max-children', type=int, default=2)
    args = parser.parse_args()
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        parser.error(f'unknown module(s) {", ".join(sorted(unknown))}: choose from {", ".join(MODULES)}')
    modules = args.modules or list(MODULES)
    # One model cache for every mutant's pytest (tests/conftest.py reuses TEST_HF_HOME instead of filling its own).
    cache = STAGES / 'hf-home'
    if not (cache / 'filled').exists():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        env = {**os.environ, 'HF_HOME': str(cache), 'HF_HUB_CACHE': str(cache / 'hub'), 'HF_HUB_OFFLINE': '1'}
        fill = [sys.executable, str(REPO / 'scripts' / 'fill_model_cache.py'), '--offline']
        subprocess.run(fill, check=True, env=env, stdout=subprocess.DEVNULL)
        (cache / 'filled').touch()
    os.environ['TEST_HF_HOME'] = str(cache)
    report, failed = {}, []
    for module in modules:
        print(f'=== mutating {module}', flush=True)
        folder = stage(module)
        run = subprocess.run([str(VENV_BIN / 'mutmut'), 'run', '--max-children', str(args.max_children)], cwd=folder)
        if run.returncode:
            failed.append(module)
        report[module] = score(folder, module)
    scores_path = STAGES / 'scores.json'
    if scores_path.exists() and args.modules:  # a run of some modules keeps the others' last scores
        report = {**json.loads(scores_path.read_text()), **report}
    scores_path.write_text(json.dumps(report, indent=2) + '\n')
    print(f'\n{"module":<16} {"killed":>7} {"timeout":>8} {"survived":>9} {"no tests":>9} {"total":>6} {"score":>6}')
    for module, figures in report.items():
        print(
            f'{module:<16} {figures.get("killed", 0):>7} {figures.get("timeout", 0):>8} {figures.get("survived", 0):>9}'
            f' {figures.get("no tests", 0):>9} {figures["total"]:>6} {figures["score"]:>6}'
        )
    print(f'survivors: {scores_path}; show one: cd {STAGES}/MODULE && {VENV_BIN}/mutmut show NAME')
    if failed:
        sys.exit(f'mutmut failed on {", ".join(failed)}')


if __name__ == '__main__':
    main()
