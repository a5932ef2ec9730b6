"""Peak RSS as reported by stats and benchmarks: the process's own, never its parent's."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from raysel.process_memory import peak_rss_bytes

pytestmark = pytest.mark.pure

CHILD = (
    "import json, resource; from raysel.process_memory import peak_rss_bytes; "
    "print(json.dumps([peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]))"
)


def test_a_child_reports_its_own_peak_not_its_parents():
    held = np.ones(2**29 // 8)  # this process holds 512 MiB when it starts the child
    assert peak_rss_bytes() >= held.nbytes
    own, rusage = json.loads(subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True, text=True,
                                            timeout=60).stdout)
    del held
    assert 0 < own < 2**28, f"a bare interpreter reported a {own / 2**20:.0f} MiB peak"
    # what the old figure read (Linux carries the parent's peak into a vfork + exec child); only shown
    print(f"child peak: VmHWM {own / 2**20:.0f} MiB, ru_maxrss {rusage / 2**20:.0f} MiB")

