"""benchmarks/gpu_check.sh is ready for a GPU machine: its `--tiny` mode runs the same code on the CPU."""
from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.torch]
ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_prints_the_three_figures(ray_session, tmp_path, capsys, monkeypatch):
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--tiny", "--workdir", str(tmp_path)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "benchmarks" / "gpu_check.py"), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    a = re.search(r"^\(a\) ViT forward images/s: model only ([\d.]+), inside raysel featurize ([\d.na]+) steady", out, re.M)
    b = re.search(r"^\(b\) K-Means on cpu, 8 images .*: ([\d.]+)x .* max \|diff\| ([\d.e+-]+)", out, re.M)
    c = re.search(r"^\(c\) bf16 vs float32 kept masks on 8 images: ([\d.]+)% identical", out, re.M)
    assert a and b and c, out
    assert float(a.group(1)) > 0
    assert float(b.group(1)) > 0 and float(b.group(2)) < 1e-3  # batched agrees with the loop (speed: a benchmark, not a test)
    assert 50 <= float(c.group(1)) <= 100
