"""Feature pipelines for the command-line tests, loaded as ``path/to/fixtures_pipelines.py:function``.

Both take the logged ``input.*`` columns with their prefix (``--keep-input-prefix``), like
:func:`mlsleuth.testing.compute_features`, the demo's serving and training feature code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlsleuth.testing import compute_features

#: The demo's upstream change: from Friday 18:00 the warehouse reports avg_amount_30d at 70 %.
DEMO_SCALE = 0.7


def fixed_features(x: dict[str, Any]) -> dict[str, Any]:
    """The fix: scale the warehouse's avg_amount_30d back before computing the features."""
    avg = np.asarray(x["input.avg_amount_30d"], dtype=np.float64) / DEMO_SCALE
    return compute_features({**x, "input.avg_amount_30d": avg})


def broken_features(x: dict[str, Any]) -> dict[str, Any]:
    """The serving pipeline unchanged: it passes the warehouse's low values through."""
    return compute_features(x)
