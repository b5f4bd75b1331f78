"""The one masked-token-count rule, shared by the data pipeline and the model.

`seamo_jax/data/masking.py` draws masks with exactly `num_masked(T, ratio)`
True per view and `seamo_jax/models/masking.py` gathers `T - num_masked(T,
ratio)` visible tokens per view (and turns the loss into NaN when a view's
count differs), so both must use the same rounding. They import this
dependency-free module (models/ may not import data/ and vice versa,
docs/DESIGN.md "Dependencies").

Rounding: round(ratio * T) with halves rounded UP (the data pipeline's rule
so far). It agrees with MAE's `len_keep = int(L * (1 - mask_ratio))` (which
masks ceil(ratio * T)) whenever ratio * T is an integer or a half, e.g.
0.75 * 196 = 147 for ViT-B/16 at 224 px. Python's round() rounds half to
even, which gave 24 masked tokens for T = 49 at ratio 0.5 in the model and 25
in the data pipeline: a NaN loss.
"""

from __future__ import annotations

import math

# ratio * T is computed in binary floating point; a product that is a half in
# decimal (e.g. 0.7 * 45 = 31.499999999999996) may land a hair below x.5. The tolerance keeps those
# rounding up; it is far below the 1/T spacing of any real token count.
_HALF_TOLERANCE = 1e-9


def num_masked(num_tokens: int, ratio: float) -> int:
    """Masked tokens per view: round(ratio * T) with halves rounded up.

    Args:
      num_tokens: T, tokens per view.
      ratio: mask ratio in [0, 1].
    Returns:
      K in [0, T].
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if num_tokens < 0:
        raise ValueError(f"token count must be >= 0, got {num_tokens}")
    return min(int(num_tokens), int(math.floor(ratio * num_tokens + 0.5 + _HALF_TOLERANCE)))
