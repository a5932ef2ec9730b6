"""`geal` (GEAL / FreeSel, Xie et al., Algorithm 1): K-Center-Greedy over each image's K knowledge clusters, cosine by default."""
from __future__ import annotations

from raysel import schema
from raysel.select.kcenter.method import KCenterMethod
from raysel.select.registry import register_method


@register_method("geal")
class GealMethod(KCenterMethod):
    """GEAL / FreeSel: K-Center-Greedy over each image's knowledge clusters (max over its clusters)."""

    column = schema.CLUSTERS
    default_distance = "cosine"
