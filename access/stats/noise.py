"""Differentially private noise for published cells, from OpenDP (never hand-written).

The privacy unit is one resident (added or removed). A resident lands in exactly one
cell of a query's level (one building, grid or community, and one category), so a table
of counts moves by at most 1 in L1 and L2; a household count too (one household can
change state); a sum moves by at most the measure's clipping bound. OpenDP's measurement
constructors add the noise (discrete Laplace, or discrete Gaussian turned into
(epsilon, delta)-DP) and its privacy map says what the release costs: that epsilon, not
the one asked for, is what the budget is charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import opendp.prelude as dp

# OpenDP gates constructors whose proofs are still under review behind "contrib";
# make_laplace, make_gaussian and binary_search_param over integers need it.
dp.enable_features("contrib")


class Mechanism(StrEnum):
    LAPLACE = "laplace"
    GAUSSIAN = "gaussian"


@dataclass(frozen=True)
class Release:
    values: list[int]
    mechanism: Mechanism
    epsilon: float  # what OpenDP's privacy map charges for this release
    delta: float
    scale: float


def _laplace(scale: float) -> Any:
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale
    )


def _gaussian(scale: float, delta: float) -> Any:
    gaussian = dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int), scale=scale
    )
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(gaussian), delta)


def release(
    values: Sequence[int],
    *,
    mechanism: Mechanism,
    epsilon: float,
    sensitivity: int,
    delta: float = 1e-6,
) -> Release:
    """Noisy copies of `values` whose release costs at most `epsilon` (and `delta` for
    the Gaussian) when one resident moves the vector by `sensitivity` in L1 / L2."""
    if epsilon <= 0 or sensitivity <= 0:
        raise ValueError("epsilon and sensitivity must be positive")
    if mechanism is Mechanism.LAPLACE:
        scale = float(dp.binary_search_param(_laplace, d_in=sensitivity, d_out=epsilon))
        measurement = _laplace(scale)
        spent = float(measurement.map(sensitivity))
        used_delta = 0.0
    else:
        scale = float(
            dp.binary_search_param(
                lambda s: _gaussian(s, delta), d_in=sensitivity, d_out=(epsilon, delta)
            )
        )
        measurement = _gaussian(scale, delta)
        spent_pair = measurement.map(sensitivity)
        spent, used_delta = float(spent_pair[0]), float(spent_pair[1])
    noisy = [int(v) for v in measurement([int(v) for v in values])]
    return Release(noisy, mechanism, spent, used_delta, scale)
