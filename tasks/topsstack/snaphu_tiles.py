"""How a snaphu unwrapping line fits its memory and uses its cores: the tiles of each pair.

topsStack's ``unwrap.py`` unwraps a pair in one piece on one core (snaphu 1.4.2 inside
ISCE2, no tile settings). When that does not fit the line's reservation, or the line holds
more than one core, the pair is unwrapped in tiles instead (``isce_unwrap_tiles.py``: snaphu 2
with ``NTILEROW``/``NTILECOL``/``NPROC``), as few tiles as fit the memory and keep every
core busy.

Memory (MB, pixels in millions), measured on this machine with the project's own sampler
(the whole process tree, tiles at 2.3 and 9.1 Mpx) and rounded up:

* one piece (ISCE2's unwrap.py, and snaphu 2 alike): ``80 + 400 * Mpx``;
* in tiles, the larger of two phases, each on top of the script itself (Python, ISCE2 and
  the memory-mapped inputs and outputs: ``80 + 20 * Mpx``): ``nproc`` tiles at once, each
  ``70 + 400 * tile Mpx`` (overlap included); then the whole image (tile assembly and the
  connected components regrown from the unwrapped phase), ``50 + 100 * Mpx``.

Measured against this model: one piece 3,537 MB at 9.1 Mpx (model 3,716); 2 x 2 tiles two at
a time 1,934 (model 2,354); 4 x 4 tiles two at a time 895 (model 1,221).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ONE_PIECE_MB = (80.0, 400.0)  # base, per Mpx
SCRIPT_MB = (80.0, 20.0)
TILE_MB = (70.0, 400.0)
WHOLE_IMAGE_MB = (50.0, 100.0)
MIN_TILE_PX = 200  # tile side (rows or columns, before overlap) below which tiles stop helping
MAX_TILES_PER_SIDE = 12
# Tile size (pixels, overlap included) beyond which snaphu slows down per pixel: its time grows
# faster than the pixels (one 5.6 Mpx pair on one core: 168 s in one piece, 67 s in 8 tiles
# of 0.8 Mpx; on 2 cores 111 s in 2 tiles, 41 s in 8, 37 s in 18 of 0.35 Mpx, 39 s in 32).
# Smaller tiles gain little more and add seams; a pair this small stays in one piece.
TARGET_TILE_PX = 1_000_000
MIN_OVERLAP_PX = 64  # snaphu's tiles must share enough pixels to be assembled without seams


@dataclass(frozen=True)
class Tiling:
    """Tiles of one pair: ``rows`` x ``cols`` tiles overlapping by ``overlap`` pixels
    (rows, columns), ``nproc`` unwrapped at a time; ``memory_mb`` is the model's peak."""

    rows: int
    cols: int
    overlap: tuple[int, int]
    nproc: int
    memory_mb: int
    tile_pixels: int

    def describe(self) -> str:
        return (
            f"{self.rows} x {self.cols} tiles (overlap {self.overlap[0]} x {self.overlap[1]} "
            f"pixels), {self.nproc} at a time, about {self.memory_mb} MB"
        )


def _mb(model: tuple[float, float], pixels: float) -> float:
    return model[0] + model[1] * pixels / 1e6


def one_piece_mb(length: int, width: int) -> int:
    """Peak MB of unwrapping ``length`` x ``width`` pixels in one piece."""
    return math.ceil(_mb(ONE_PIECE_MB, length * width))


def _overlap(side: int) -> int:
    return max(MIN_OVERLAP_PX, round(0.1 * side))


def tiling(length: int, width: int, rows: int, cols: int, nproc: int) -> Tiling:
    """The tiling of ``rows`` x ``cols`` tiles with its overlap and modelled peak MB."""
    tile_length, tile_width = math.ceil(length / rows), math.ceil(width / cols)
    overlap = (_overlap(tile_length) if rows > 1 else 0, _overlap(tile_width) if cols > 1 else 0)
    tile_pixels = (tile_length + overlap[0]) * (tile_width + overlap[1])
    nproc = max(1, min(nproc, rows * cols))
    script = _mb(SCRIPT_MB, length * width)
    peak = script + max(nproc * _mb(TILE_MB, tile_pixels), _mb(WHOLE_IMAGE_MB, length * width))
    return Tiling(rows, cols, overlap, nproc, math.ceil(peak), tile_pixels)


def grids(length: int, width: int) -> list[tuple[int, int]]:
    """Tile grids whose tiles are at least ``MIN_TILE_PX`` on each side, fewest tiles first,
    then the squarest tiles."""
    grids = [
        (rows, cols)
        for rows in range(1, MAX_TILES_PER_SIDE + 1)
        for cols in range(1, MAX_TILES_PER_SIDE + 1)
        if (rows == 1 or length / rows >= MIN_TILE_PX)
        and (cols == 1 or width / cols >= MIN_TILE_PX)
    ]
    return sorted(
        grids,
        key=lambda g: (g[0] * g[1], abs(math.log((length / g[0]) / (width / g[1])))),
    )


def smallest_mb(length: int, width: int) -> int:
    """The least memory any tiling of the pair needs (its finest tiles, one at a time)."""
    return min(
        tiling(length, width, rows, cols, 1).memory_mb for rows, cols in grids(length, width)
    )


def _fit(
    length: int, width: int, rows: int, cols: int, cores: int, memory_mb: int
) -> Tiling | None:
    """``rows`` x ``cols`` tiles with as many at a time (up to ``cores``) as fit ``memory_mb``."""
    for nproc in range(min(cores, rows * cols), 0, -1):
        candidate = tiling(length, width, rows, cols, nproc)
        if candidate.memory_mb <= memory_mb:
            return candidate
    return None


def choose_tiling(length: int, width: int, *, memory_mb: int, cores: int) -> Tiling | None:
    """The tiles for a pair of ``length`` x ``width`` pixels given ``memory_mb`` and ``cores``.

    None: one piece on one core (ISCE2's own line), for a pair no bigger than a tile that
    fits. Otherwise the tiles that fit the memory with the most of them at a time (up to
    ``cores``), then the fewest tiles of at most ``TARGET_TILE_PX`` (or the finest tiles when
    none is that small). Raises ValueError when even the finest tiles one at a time do not
    fit.
    """
    pixels = length * width
    if cores <= 1 and pixels <= TARGET_TILE_PX and one_piece_mb(length, width) <= memory_mb:
        return None
    fitting = [
        fit
        for rows, cols in grids(length, width)
        if (fit := _fit(length, width, rows, cols, cores, memory_mb)) is not None
    ]
    if not fitting:
        raise ValueError(
            f"unwrapping {length} x {width} pixels needs at least "
            f"{smallest_mb(length, width)} MB (its finest tiles, one at a time) but "
            f"{memory_mb} MB is reserved"
        )
    small = [t for t in fitting if t.tile_pixels <= TARGET_TILE_PX] or fitting[-1:]
    best = max(small, key=lambda t: t.nproc)  # the first (fewest tiles) of the most parallel
    return None if best.rows * best.cols == 1 else best
