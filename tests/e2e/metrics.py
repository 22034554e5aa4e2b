"""How far a recovered velocity map and interferogram stack are from the simulator's truth.

Every map is LOS velocity in m/yr on the radar grid. MintPy's maps are relative to its
reference pixel, so the truth is taken relative to the same pixel, and the offset the
reference pixel's own noise puts on the whole map (the median difference) is removed
before the RMSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

RMSE_FRACTION_OF_TRUE_STD = 0.25
SLOPE_RANGE = (0.9, 1.1)
CENTRE_HALF_WINDOW = 2  # the deformation centre's value: median of a 5 x 5 window


@dataclass(frozen=True)
class VelocityMetrics:
    """Recovered against true velocity on coherent pixels (m/yr unless noted)."""

    pixels: int
    rmse: float  # after removing the median offset
    offset: float  # median of recovered minus true
    true_std: float
    slope: float  # least-squares slope of recovered on true
    centre_true: float
    centre_recovered: float

    def failures(self) -> list[str]:
        """The checks this map fails (empty when it passes them all)."""
        out = []
        if not self.rmse <= RMSE_FRACTION_OF_TRUE_STD * self.true_std:
            out.append(
                f"RMSE {self.rmse * 1e3:.2f} mm/yr > {RMSE_FRACTION_OF_TRUE_STD} x the true "
                f"field's std {self.true_std * 1e3:.2f} mm/yr"
            )
        if not SLOPE_RANGE[0] <= self.slope <= SLOPE_RANGE[1]:
            out.append(f"slope {self.slope:.3f} outside {SLOPE_RANGE[0]}..{SLOPE_RANGE[1]}")
        if not self.centre_true * self.centre_recovered > 0:
            out.append(
                f"sign at the deformation centre: recovered {self.centre_recovered * 1e3:+.2f}, "
                f"true {self.centre_true * 1e3:+.2f} mm/yr"
            )
        return out


def deformation_centre(
    true: FloatArray, mask: BoolArray, ref_yx: tuple[int, int]
) -> tuple[int, int]:
    """The coherent pixel where the true velocity departs most from the reference pixel's."""
    rel = np.where(mask, np.abs(true - true[ref_yx]), -np.inf)
    y, x = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return int(y), int(x)


def velocity_metrics(
    recovered: FloatArray, true: FloatArray, mask: BoolArray, ref_yx: tuple[int, int]
) -> VelocityMetrics:
    """Compare ``recovered`` (relative to ``ref_yx``) with ``true`` on ``mask`` pixels."""
    true_rel = np.asarray(true, dtype=np.float64) - float(true[ref_yx])
    rec = np.asarray(recovered, dtype=np.float64)
    use = mask & np.isfinite(rec) & np.isfinite(true_rel)
    t, r = true_rel[use], rec[use]
    diff = r - t
    offset = float(np.median(diff))
    slope = float(np.cov(t, r, bias=True)[0, 1] / np.var(t))
    y, x = deformation_centre(true_rel, use, ref_yx)
    h = CENTRE_HALF_WINDOW
    window = (slice(max(y - h, 0), y + h + 1), slice(max(x - h, 0), x + h + 1))
    return VelocityMetrics(
        pixels=int(use.sum()),
        rmse=float(np.sqrt(np.mean((diff - offset) ** 2))),
        offset=offset,
        true_std=float(np.std(t)),
        slope=slope,
        centre_true=float(np.median(true_rel[window][use[window]])),
        centre_recovered=float(np.median(rec[window][use[window]])),
    )


def island_cycles(
    phase: FloatArray, true_phase: FloatArray, island: BoolArray, mainland: BoolArray
) -> npt.NDArray[np.int64]:
    """Per interferogram, the whole 2 pi cycles by which ``island`` is offset from
    ``mainland`` against the true phase (0 where the two are unwrapped consistently).

    ``phase`` and ``true_phase`` are (pairs, length, width) in radians; any constant
    (reference-point) offset of a pair cancels in the island-minus-mainland difference.
    """
    diff = np.asarray(phase, dtype=np.float64) - np.asarray(true_phase, dtype=np.float64)
    jump = np.median(diff[:, island], axis=1) - np.median(diff[:, mainland], axis=1)
    return np.rint(jump / (2 * np.pi)).astype(np.int64)
