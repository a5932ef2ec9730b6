"""The shard pass on a torch device: vectors held on the device (a GPU where the actor has one).

The same formulas as `distances.update_min_distance`, in float64, on fixed-shape blocks
(rows in blocks of `ROW_BLOCK`, centers in blocks of `distances.CENTER_BLOCK`, both
zero-padded): one shape per product, so a (vector, center) pair gets the same bits
wherever it sits and whatever arrives with it, on a given device and library.

Determinism and ties: on one device every pass is bit-reproducible (fixed shapes, no
atomics: a max/min reduction over a block is exact), so equal vectors get equal
distances and ties still go to the smallest uri. On a CPU device the products go through
numpy's BLAS (see `_product`: MKL's GEMM breaks the "same bits wherever it sits" rule on some
processors). Across libraries (cuBLAS / MKL vs the
numpy path's BLAS) a distance may differ in its last bits (~1e-16 relative), so the
picks equal the numpy path's except where two images' scores differ by less than
about 1e-13 (the driver's in-pass simulation uses the numpy kernel). The torch path
computes every distance (no triangle-inequality skips: a dense product is what a GPU
does best).
"""
from __future__ import annotations

import numpy as np

from raysel.select.distances import _center_blocks

ROW_BLOCK = 8192  # vectors per product on the device (fixed)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchMinDistance:
    """Min-distances of one shard's vectors, computed on `device`.

    Args:
        points: [V, D] stored vectors (float32 / float16; held on the device as stored).
        point_factors: [V] float64. distance: "cosine" or "euclidean".
        device: torch device ("cuda", "cpu", ...; default: cuda when available).
    """

    def __init__(self, points: np.ndarray, point_factors: np.ndarray, distance: str, device: str | None = None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device or default_device())
        self.distance = distance
        self.count = len(points)
        self.points = torch.from_numpy(np.ascontiguousarray(points)).to(self.device)
        self.factors = torch.from_numpy(np.ascontiguousarray(point_factors, dtype=np.float64)).to(self.device)
        self.min_distance = torch.full((self.count,), float("inf"), dtype=torch.float64, device=self.device)
        self.buffer = torch.zeros((ROW_BLOCK, points.shape[1]), dtype=torch.float64, device=self.device)

    def _product(self, block):
        """buffer @ block.T. On a CPU through numpy's BLAS, as the numpy path: torch's CPU GEMM
        (MKL) gives a (vector, center) pair other bits by the center's column in the block on
        some processors (seen on AMD EPYC: up to 8e-8 apart after the square root near zero), so
        grouping the same centers otherwise changed min-distances."""
        if self.device.type == "cpu":
            return self.torch.from_numpy(self.buffer.numpy() @ block.numpy().T)
        return self.buffer @ block.T

    def update(self, centers: np.ndarray, center_factors: np.ndarray, out: np.ndarray) -> None:
        """Fold `centers` [c, D] (factors [c]) into the min-distances; copy them to `out` [V] float64."""
        torch = self.torch
        if len(centers) and self.count:
            blocks = [
                (torch.from_numpy(block).to(self.device), torch.from_numpy(np.ascontiguousarray(factors)).to(self.device), real)
                for block, factors, real in _center_blocks(centers, center_factors, self.distance)
            ]
            for start in range(0, self.count, ROW_BLOCK):
                count = min(ROW_BLOCK, self.count - start)
                self.buffer[:count] = self.points[start : start + count]
                if count < ROW_BLOCK:
                    self.buffer[count:] = 0.0
                factors = self.factors[start : start + count]
                target = self.min_distance[start : start + count]
                for block, block_factors, real in blocks:
                    dots = self._product(block)  # [ROW_BLOCK, CENTER_BLOCK], one shape
                    if self.distance == "cosine":
                        nearest = 1.0 - factors * dots[:count, :real].amax(dim=1)
                    else:
                        nearest = torch.sqrt(torch.clamp(factors + (dots[:count, :real] + block_factors).amin(dim=1), min=0.0))
                    torch.minimum(target, torch.clamp(nearest, min=0.0), out=target)
        out[:] = self.min_distance.cpu().numpy()
