"""Run one swath of a topsStack run-file line; run by ISCE2's own Python, not insarflow's.

``python3 isce_swath.py --swath N SentinelWrapper.py -c CONFIG`` runs the line as written,
with the swath loop of its ISCE2 function narrowed to swath N: ``s1a_isce_utils.getSwathList``
(the ``IW<n>`` folders ``geo2rdr.py``, ``resamp_withCarrier.py`` and ``generateIgram.py``
loop over) returns N alone, and ``Sentinel1_TOPS.py`` gets ``--swaths N``. Nothing else
changes: the one pass of the loop that runs is ISCE2's code on the same paths (see
``tasks/topsstack/swath_pieces.py`` for who calls it).

Standalone on purpose: it imports only the standard library and ISCE2's topsStack modules
(from the folder of ``SentinelWrapper.py`` on PATH), so that it runs in ISCE2's environment.
"""

from __future__ import annotations

import argparse
import runpy
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swath", type=int, required=True, choices=(1, 2, 3))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the run-file line")
    return parser.parse_args(argv)


def one_swath_list(every: Callable[[str], list[int]], swath: int) -> Callable[[str], list[int]]:
    def swath_list(indir: str) -> list[int]:
        return [s for s in every(indir) if s == swath]

    return swath_list


def one_swath_unpack(unpack: Callable[..., Any], swath: int) -> Callable[..., Any]:
    def main(iargs: list[str] | None = None) -> Any:
        args = list(iargs or [])
        if "--swaths" in args:
            args[args.index("--swaths") + 1] = str(swath)
        else:
            args += ["--swaths", str(swath)]
        return unpack(args)

    return main


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if not args.command:
        sys.exit("isce_swath.py: give the run-file line after --swath N")
    wrapper = shutil.which(args.command[0])
    if wrapper is None:
        sys.exit(f"isce_swath.py: {args.command[0]} is not on PATH; source ISCE2's env.sh first")
    sys.path.insert(0, str(Path(wrapper).resolve().parent))
    # SentinelWrapper takes a function's module from sys.modules when it is there, and the
    # topsStack scripts import s1a_isce_utils by that name: both see the narrowed versions.
    import s1a_isce_utils
    import Sentinel1_TOPS

    s1a_isce_utils.getSwathList = one_swath_list(s1a_isce_utils.getSwathList, args.swath)
    Sentinel1_TOPS.main = one_swath_unpack(Sentinel1_TOPS.main, args.swath)
    sys.argv = [wrapper, *args.command[1:]]
    print(f"isce_swath.py: swath {args.swath} of: {' '.join(args.command)}", flush=True)
    runpy.run_path(wrapper, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
