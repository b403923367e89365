"""The README's tutorial example runs as written and prints a 384-dim embedding."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import REPO


def test_the_readme_tutorial_example_prints_a_384_dim_embedding():
    readme = (REPO / 'README.md').read_text()
    block = re.search(r'<!-- tutorial-example.*?-->\n```python\n(.*?)```', readme, flags=re.DOTALL)
    assert block, 'the README lost its tutorial example'
    # Runs from the repository root, as the README says, with this session's offline model cache.
    result = subprocess.run(
        [sys.executable, '-c', block.group(1)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == '(384,)'
