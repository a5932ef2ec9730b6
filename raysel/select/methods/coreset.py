"""`coreset` (Sener & Savarese 2018): K-Center-Greedy over one global embedding per image, euclidean by default."""
from __future__ import annotations

from raysel import schema
from raysel.select.kcenter.method import KCenterMethod
from raysel.select.registry import register_method


@register_method("coreset")
class CoresetMethod(KCenterMethod):
    """Core-Set: K-Center-Greedy over one global embedding per image."""

    column = schema.EMBEDDING
    default_distance = "euclidean"
