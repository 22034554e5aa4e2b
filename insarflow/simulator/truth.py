"""How far a run's recovered velocity is from the simulator's known truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np


@dataclass
class VelocityError:
    """Recovered-vs-true LOS velocity on coherent pixels.

    MintPy's velocities are relative to one reference pixel, whose own noise
    (decorrelation, atmosphere) shifts the whole map: that shift is ``bias_mm_yr``.
    ``rmse_mm_yr`` is the RMS of the difference once that shift is removed.
    """

    rmse_mm_yr: float
    bias_mm_yr: float
    pixels: int


def velocity_error(mintpy_dir: Path, truth_file: Path) -> VelocityError:
    """Compare MintPy's ``velocity.h5`` with the simulator's truth, both relative to
    MintPy's reference pixel, on pixels MintPy kept and the truth marks coherent."""
    with h5py.File(mintpy_dir / "velocity.h5", "r") as f:
        est = f["velocity"][()].astype("f8")
        ref_y, ref_x = int(f.attrs["REF_Y"]), int(f.attrs["REF_X"])
    with h5py.File(truth_file, "r") as f:
        true = f["velocity"][()].astype("f8")
        coherent = f["mask"][()].astype(bool)
    mask_file = mintpy_dir / "maskTempCoh.h5"
    if mask_file.is_file():
        with h5py.File(mask_file, "r") as f:
            coherent &= f["mask"][()].astype(bool)
    diff = (est - (true - true[ref_y, ref_x])) * 1000.0
    values = diff[coherent & np.isfinite(diff)]
    bias = float(np.median(values))
    return VelocityError(
        rmse_mm_yr=float(np.sqrt(np.mean((values - bias) ** 2))),
        bias_mm_yr=bias,
        pixels=int(values.size),
    )
