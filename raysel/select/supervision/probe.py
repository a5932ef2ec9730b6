"""A linear classifier (multinomial logistic regression) on frozen embeddings.

The main-task model of the label-aware methods when no `--predictions` are
given: PT4AL's cycles >= 1 and the uncertainty acquisitions (Zolfaghari Bengar
et al. train a linear classifier on frozen self-supervised features).

Pure torch on the CPU in float64, full-batch L-BFGS from a zero init: no
randomness, so the same labels give the same probabilities bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LinearProbe:
    """softmax(((x - mean) / std) @ weight.T + bias): weight [K, D], bias [K], mean / std [D]."""

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """[M, D] features -> [M, K] float64 class probabilities."""
        with torch.no_grad():
            logits = self._logits(torch.from_numpy(np.asarray(features, dtype=np.float64)))
            return torch.softmax(logits, dim=1).numpy()

    def predict_logits(self, features: np.ndarray) -> np.ndarray:
        """[M, D] features -> [M, K] float64 logits (before the softmax)."""
        with torch.no_grad():
            return self._logits(torch.from_numpy(np.asarray(features, dtype=np.float64))).numpy()

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        standardized = (features - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)
        return standardized @ torch.from_numpy(self.weight).T + torch.from_numpy(self.bias)


def fit_linear_probe(
    features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float = 1.0, max_iter: int = 500
) -> LinearProbe:
    """Multinomial logistic regression, minimising sum(cross-entropy) + l2 / 2 * |W|^2.

    The objective is scikit-learn's LogisticRegression(C=1/l2) on standardized
    features (bias not penalised).

    Args:
        features: [N, D] embeddings of the labeled images.
        labels: [N] int class indices in [0, num_classes).
        num_classes: K; classes without a labeled image get a low probability, never the argmax.
    """
    threads = torch.get_num_threads()
    if np.size(features) < SMALL_PROBLEM:
        torch.set_num_threads(1)  # thread start-up costs more than it saves on a few thousand numbers
    try:
        return _fit(features, labels, num_classes, l2, max_iter)
    finally:
        torch.set_num_threads(threads)


# Below this many feature values one torch thread fits fastest (measured: 160 x 64 took 6.2 s with
# 2 threads on a busy 2-core machine, 0.14 s with 1; the results are the same).
SMALL_PROBLEM = 1_000_000


def _fit(features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float, max_iter: int) -> LinearProbe:
    x = torch.from_numpy(np.asarray(features, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"features must be [N, D] and labels [N], N >= 1; got {tuple(x.shape)} and {tuple(y.shape)}")
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False).clamp_min(1e-6)
    standardized = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = standardized @ weight.T + bias
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum") + 0.5 * l2 * (weight * weight).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return LinearProbe(
        weight=weight.detach().numpy().copy(),
        bias=bias.detach().numpy().copy(),
        mean=mean.numpy().copy(),
        std=std.numpy().copy(),
    )
