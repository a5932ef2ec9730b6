"""This process's peak resident memory, as selection stats, tests and benchmarks report it."""
from __future__ import annotations

import resource


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since it started its program (Linux's VmHWM).

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux keeps in it the high-water mark of the
    address space that an exec replaced, and Python's subprocess starts children by vfork +
    exec, so a child reports its parent's peak when that was larger (a test's 10M-row
    manifest child read 1.5 GiB: its parent, a long pytest run, had reached that).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: the best there is
