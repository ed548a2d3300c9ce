"""Run hostile input in a child process that cannot hang or exhaust the machine.

A regression of a hostile-input fix (an alias bomb expanding again, a regular expression
backtracking again) must fail its test, not take the test run — or the host — down with it. The
child gets an address-space limit and the parent a timeout; the child prints what it measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

_PRELUDE = """
import json, resource, time
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
"""


def run_bounded(code: str, *, timeout: float = 60.0, memory: int = 2 << 30) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter limited to ``memory`` bytes of address space.

    ``code`` must end by printing one JSON object (its last line of output), which is returned.
    Raises ``subprocess.TimeoutExpired`` (the child is killed) after ``timeout`` seconds.
    """
    source = _PRELUDE.format(memory=memory) + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"child failed ({done.returncode}):\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
