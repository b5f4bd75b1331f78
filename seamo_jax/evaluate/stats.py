"""Summary statistics over repeated runs (seeds): mean, std, 95% t-interval.

A probe number from one seed says little about a small labelled set, so every
reported metric is a summary over >= 3 seeds. The interval is the Student-t
confidence interval of the mean,

    mean +- t_{1 - alpha/2, n-1} * s / sqrt(n),   s = sample std (ddof=1),

which is the right interval for few (n < 30) roughly normal repeats.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import scipy.stats

MIN_SEEDS_FOR_INTERVAL = 3


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean of `values`.

    Args:
      values: n >= 2 observations (one per seed).
      confidence: coverage, e.g. 0.95.
    Returns:
      (low, high). With zero spread both equal the mean.
    """
    x = np.asarray(values, np.float64)
    n = x.size
    if n < 2:
        raise ValueError(f"a t-interval needs >= 2 values, got {n}")
    mean = float(x.mean())
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half_width = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sem
    return mean - half_width, mean + half_width


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample std and t-interval of per-seed values.

    Returns a JSON-ready dict: n, mean, std (ddof=1), ci_low, ci_high,
    ci_half_width, confidence, values. With fewer than
    MIN_SEEDS_FOR_INTERVAL values the interval is reported as None (and
    `warning` says why) rather than a misleadingly wide/undefined one.
    """
    x = [float(v) for v in values]
    n = len(x)
    if n == 0:
        raise ValueError("summarize() needs at least one value")
    out: dict = {"n": n, "mean": float(np.mean(x)), "values": x, "confidence": confidence}
    out["std"] = float(np.std(x, ddof=1)) if n > 1 else 0.0
    if n >= MIN_SEEDS_FOR_INTERVAL:
        low, high = t_interval(x, confidence)
        out.update(ci_low=low, ci_high=high, ci_half_width=(high - low) / 2.0)
    else:
        out.update(ci_low=None, ci_high=None, ci_half_width=None,
                   warning=f"{n} seed(s) < {MIN_SEEDS_FOR_INTERVAL}: no confidence interval")
    return out
