"""Unwrap one topsStack pair with snaphu in tiles; run by ISCE2's own Python, not insarflow's.

topsStack's ``unwrap.py`` calls the snaphu 1.4.2 built into ISCE2, which unwraps a pair in one
piece on one core (its Python binding has no tile settings). This script unwraps the same
inputs with snaphu 2 (the ``snaphu`` package: ``pip install snaphu`` in ISCE2's environment)
in ``--tiles`` tiles, ``--nproc`` of them at a time, and writes what ``unwrap.py`` writes:
``<unw>`` (two bands, amplitude and unwrapped phase, line-interleaved float32),
``<unw>.conncomp`` (byte labels) and their ISCE2 ``.xml``/``.vrt`` headers, with pixels
whose interferogram is zero set to zero as ``unwrap.py`` does. The costs follow
``unwrap.py``: smooth costs with MCF initialisation (its default), deformation costs with
MST initialisation with ``--nomcf``; the correlation looks are ``unwrap.py``'s
``rlks * alks / 0.64``.

Standalone on purpose: it imports only ISCE2, numpy and snaphu, so that it runs in ISCE2's
environment (see ``tasks/topsstack/multicore.py`` for who calls it and how the tiles are
chosen).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import isce  # noqa: F401  # ISCE2's own import hook: isceobj is importable after it
import isceobj
import numpy as np
import snaphu

# unwrap.py's correlation looks: rlks * alks / (azfact * rngfact), both factors 0.8
CORRELATION_LOOK_FACTOR = 0.8 * 0.8


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ifg", required=True, help="wrapped interferogram (complex64)")
    parser.add_argument("--coh", required=True, help="coherence (float32, one band)")
    parser.add_argument("--unw", required=True, help="unwrapped output")
    parser.add_argument("--rlks", type=int, required=True)
    parser.add_argument("--alks", type=int, required=True)
    parser.add_argument("--nomcf", action="store_true", help="deformation costs, MST init")
    parser.add_argument("--tiles", type=int, nargs=2, required=True, metavar=("ROWS", "COLS"))
    parser.add_argument("--overlap", type=int, nargs=2, required=True, metavar=("ROWS", "COLS"))
    parser.add_argument("--nproc", type=int, required=True)
    return parser.parse_args(argv)


def load_image(path: str) -> isceobj.Image:
    image = isceobj.createImage()
    image.load(path + ".xml")
    return image


def render(path: str, width: int, length: int, *, unw: bool) -> None:
    """The ``.xml`` and ``.vrt`` headers ``unwrap.py`` renders for its outputs."""
    image = isceobj.Image.createUnwImage() if unw else isceobj.Image.createImage()
    image.setFilename(path)
    image.setWidth(width)
    image.setLength(length)
    image.setAccessMode("read")
    if not unw:
        image.setDataType("BYTE")
    image.renderHdr()
    image.renderVRT()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    start = time.time()
    ifg_image = load_image(args.ifg)
    width, length = ifg_image.getWidth(), ifg_image.getLength()
    if load_image(args.coh).bands != 1:
        sys.exit(f"{args.coh}: a one-band coherence file is needed")
    igram = np.memmap(args.ifg, dtype=np.complex64, mode="r", shape=(length, width))
    corr = np.memmap(args.coh, dtype=np.float32, mode="r", shape=(length, width))
    nlooks = args.rlks * args.alks / CORRELATION_LOOK_FACTOR
    cost, init = ("defo", "mst") if args.nomcf else ("smooth", "mcf")
    print(
        f"snaphu {snaphu.get_snaphu_version()} in {args.tiles[0]} x {args.tiles[1]} tiles "
        f"(overlap {args.overlap[0]} x {args.overlap[1]} pixels), {args.nproc} at a time, "
        f"on {length} x {width} pixels; {cost} costs, {init} initialisation, "
        f"{nlooks:.1f} correlation looks",
        flush=True,
    )
    out_dir = Path(args.unw).resolve().parent
    with tempfile.TemporaryDirectory(prefix=".snaphu-", dir=out_dir) as scratch:
        phase = np.memmap(
            Path(scratch) / "unw.f4", dtype=np.float32, mode="w+", shape=(length, width)
        )
        labels = np.memmap(
            Path(scratch) / "cc.u4", dtype=np.uint32, mode="w+", shape=(length, width)
        )
        snaphu.unwrap(
            igram,
            corr,
            nlooks,
            cost=cost,
            init=init,
            ntiles=tuple(args.tiles),
            tile_overlap=tuple(args.overlap),
            nproc=args.nproc,
            # re-optimising the whole image in one piece would need one piece's memory
            single_tile_reoptimize=False,
            regrow_conncomps=True,
            scratchdir=scratch,
            unw=phase,
            conncomp=labels,
        )
        # unwrap.py's layout: per line, the amplitude row then the phase row; zero where the
        # interferogram is zero (no data)
        unw = np.memmap(args.unw, dtype=np.float32, mode="w+", shape=(length, 2, width))
        conncomp = np.memmap(
            args.unw + ".conncomp", dtype=np.uint8, mode="w+", shape=(length, width)
        )
        rows = max(1, (64 << 20) // (width * 16))  # about 64 MB of input per block
        for top in range(0, length, rows):
            block = slice(top, min(top + rows, length))
            ifg = np.asarray(igram[block])
            nodata = ifg == 0
            unw[block, 0, :] = np.where(nodata, 0, np.abs(ifg))
            unw[block, 1, :] = np.where(nodata, 0, phase[block])
            conncomp[block] = np.where(nodata, 0, np.minimum(labels[block], 255))
        unw.flush()
        conncomp.flush()
        del phase, labels
    render(args.unw, width, length, unw=True)
    render(args.unw + ".conncomp", width, length, unw=False)
    minutes, seconds = divmod(time.time() - start, 60)
    print(f"time used: {minutes:02.0f} mins {seconds:02.1f} secs.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
