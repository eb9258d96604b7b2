"""The mean and standard deviation of a GRU4Rec's scores over every item, in closed form.

Owns: `ScoreMoments`. The scores of an output h are s_j = w_j . h + b_j over the n
items. With a_j = [w_j, b_j] and x = [h, 1]: mean(s) = mean(a) . x and var(s) =
x^T C x, C the population covariance of the rows a_j ((H+1) x (H+1)). C is computed
once per model (O(n H^2), float64); each query then costs O(H^2) instead of the
O(n H) of scoring every item. The hybrid's z-score (recommend/hybrid.py) uses it
offline and served, so both need no more than a shortlist of scores.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

CHUNK = 8192  # item rows per pass while summing the covariance (bounded temporaries)


class ScoreMoments:
    """Mean vector and covariance of the rows [w_j, b_j] of an item matrix."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        """weight (n, H), bias (n,): the item matrix s = weight @ h + bias."""
        with torch.inference_mode():
            n, h = weight.shape
            mean = torch.zeros(h + 1, dtype=torch.float64)
            for i in range(0, n, CHUNK):
                mean[:h] += weight[i : i + CHUNK].double().sum(0)
            mean[h] = bias.double().sum()
            mean /= n
            cov = torch.zeros((h + 1, h + 1), dtype=torch.float64)
            for i in range(0, n, CHUNK):
                a = torch.cat([weight[i : i + CHUNK], bias[i : i + CHUNK, None]], 1)
                c = a.double() - mean  # (chunk, H+1), centred
                cov.addmm_(c.t(), c)
            self.mean = mean  # (H+1,)
            self.cov = cov / n  # (H+1, H+1)

    def of(self, out: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard deviation) of every item's score, for each row of out
        (B, H): two (B,) float64 arrays."""
        with torch.inference_mode():
            x = torch.cat([out.double(), out.new_ones((len(out), 1), dtype=torch.float64)], 1)
            mean = x @ self.mean  # (B,)
            var = ((x @ self.cov) * x).sum(1).clamp_min_(0.0)  # (B,)
            return mean.numpy(), var.sqrt_().numpy()
