"""`--format csv`: uri, rank, score; one row per pick, in rank order (score empty for a random pick)."""
from __future__ import annotations

import csv
import io

from raysel.config import ExportConfig
from raysel.export.picks import Picks


def build_csv(picks: Picks, config: ExportConfig) -> dict[str, bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["uri", "rank", "score"])
    for uri, rank, score in zip(picks.uris, picks.ranks, picks.scores):
        writer.writerow([uri, rank, "" if score is None else repr(score)])
    return {config.out: buffer.getvalue().encode("utf-8")}
