"""The "From bucket to labeling tool" walkthrough of docs/operations.md runs as written."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def walkthrough_commands() -> str:
    text = open(os.path.join(REPO, "docs", "operations.md")).read()
    block = re.search(r"<!-- walkthrough:start -->\n```bash\n(.*?)```\n<!-- walkthrough:end -->", text, re.S)
    assert block, "docs/operations.md lost its walkthrough block"
    return block.group(1)


@pytest.mark.torch
@pytest.mark.timeout(900)
def test_walkthrough_runs_as_written(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"], "RAY_ADDRESS": ""}
    script = "set -eu\n" + walkthrough_commands()
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    duplicates = set(pq.read_table(tmp_path / "duplicates.parquet").column("uri").to_pylist())
    picks = pq.read_table(tmp_path / "selection.parquet").column("uri").to_pylist()
    assert len(picks) == 6 and not duplicates & set(picks)
    tasks = json.load(open(tmp_path / "tasks.json"))
    assert [t["data"]["uri"] for t in tasks] == picks
    assert len(json.load(open(tmp_path / "picks.coco.json"))["images"]) == 6
    assert len(open(tmp_path / "manifest.jsonl").read().splitlines()) == 8
    assert len(json.load(open(tmp_path / "picks-fiftyone" / "samples.json"))["samples"]) == 6
    assert 'id="duplicates"' in open(tmp_path / "report.html").read()
