"""Names the stages share: run stages, topsStack geometry layers, MintPy steps and options.

Each is defined here once; the modules that use them import them from here.
"""

from __future__ import annotations

from typing import Literal, get_args

#: A stage of a run; ``STAGES`` lists them in order.
Stage = Literal["acquire", "topsstack", "sbas", "products"]
STAGES: tuple[Stage, ...] = get_args(Stage)

#: The geometry layers topsStack merges into ``merged/geom_reference/<layer>.rdr``.
GEOMETRY_LAYERS: tuple[str, ...] = ("lat", "lon", "los", "hgt", "shadowMask", "incLocal")

#: smallbaselineApp steps, in MintPy's order.
MINTPY_STEPS: tuple[str, ...] = (
    "load_data",
    "modify_network",
    "reference_point",
    "quick_overview",
    "correct_unwrap_error",
    "invert_network",
    "correct_LOD",
    "correct_SET",
    "correct_ionosphere",
    "correct_troposphere",
    "deramp",
    "correct_topography",
    "residual_RMS",
    "reference_date",
    "velocity",
    "geocode",
    "google_earth",
    "hdfeos5",
)

# Values of MintPy options that the configuration exposes.
UnwrapErrorMethod = Literal["no", "bridging", "phase_closure", "bridging+phase_closure"]
TroposphereMethod = Literal["no", "pyaps", "height_correlation", "gacos"]

# MintPy option keys read back from a run's template.
MIN_TEMP_COH_KEY = "mintpy.networkInversion.minTempCoh"
MIN_COHERENCE_KEY = "mintpy.reference.minCoherence"
