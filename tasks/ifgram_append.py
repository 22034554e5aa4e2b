"""Grow MintPy's ``inputs/ifgramStack.h5`` by what an update adds instead of reloading it all.

MintPy 1.6's load_data (update mode) rewrites the whole stack file as soon as one pair is
new. Here the existing file is resized in place and only the slices that differ from a fresh
load are written: the new pairs and the older pairs sorted after the first new one (pairs are
stored in sorted order, so a new last date's pairs land among the last dates' pairs), plus
any older pair whose interferogram files are newer than the stack file (reprocessed, e.g.
with a precise orbit). Everything else a fresh load writes and later steps change is reset to
what a fresh load writes: the small ``date``/``bperp``/``dropIfgram`` datasets, the root
attributes (reference_point adds REF_Y/REF_X, ...) and datasets only later steps add
(``unwrapPhase_bridging``...). The slices are read with MintPy's own readers and options
(subset box, multilook), so the file equals a fresh load of all pairs; MintPy's load_data
then finds every pair present and skips.

When a fresh load is needed anyway (no stack file, another size or dataset list) nothing is
done and MintPy's load_data writes the file; when pairs are gone the file is deleted first,
since MintPy's update mode would keep a file holding more pairs than it finds. A marker
makes a killed append count as a broken file: the next attempt deletes it and MintPy loads
from scratch.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from insarflow import atomic

#: Datasets whose slices are appended; a stack with any other 3D dataset is loaded afresh.
APPENDABLE = ("unwrapPhase", "coherence", "connectComponent", "wrapPhase", "magnitude")
_MARKER = Path(".insarflow") / "append_ifgrams.running"


@dataclass(frozen=True)
class AppendResult:
    """What :func:`append_ifgram_stack` did to ``stack_file``."""

    stack_file: Path
    added: tuple[str, ...]  # new pairs, REF_SEC
    rewritten: int  # slices written per dataset (new pairs and the pairs moved or reloaded)
    total: int  # pairs in the file now

    def describe(self) -> str:
        return (
            f"appended {len(self.added)} interferogram(s) to {self.stack_file.name} "
            f"({self.rewritten} of {self.total} slices written)"
        )


def _date12(pair: tuple[str, str]) -> str:
    return f"{pair[0]}_{pair[1]}"


def _fresh_load_inputs(work_dir: Path) -> tuple[Any, dict[str, Any]]:
    """MintPy's own view of what load_data would write: the stack object and its options."""
    from mintpy import load_data as ld
    from mintpy.cli.load_data import cmd_line_parse

    inps = cmd_line_parse(["--template", str(work_dir / "smallbaselineApp.cfg")])
    i_dict = ld.read_subset_box(ld.read_inps2dict(inps))
    stack_obj = ld.read_inps_dict2ifgram_stack_dict_object(i_dict, ld.IFG_DSET_NAME2TEMPLATE_KEY)
    return stack_obj, i_dict


def _fresh_metadata(stack_obj: Any, i_dict: dict[str, Any]) -> dict[str, Any]:
    """The root attributes ``ifgramStackDict.write2hdf5`` writes for an interferogram stack."""
    from mintpy import load_data as ld
    from mintpy.utils import attribute as attr

    meta = dict(stack_obj.get_metadata())
    meta.update(ld.get_extra_metadata(i_dict))
    if i_dict["box"]:
        meta = attr.update_attribute4subset(meta, i_dict["box"])
    if i_dict["xstep"] * i_dict["ystep"] > 1:
        meta = attr.update_attribute4multilook(meta, i_dict["ystep"], i_dict["xstep"])
    meta["FILE_TYPE"] = stack_obj.name
    return meta


def _newest_mtime(files: Any) -> float:
    return max(Path(f).stat().st_mtime for f in files)


def _append(stack_file: Path, work_dir: Path, marker: Path) -> AppendResult | None:
    import h5py

    stack_obj, i_dict = _fresh_load_inputs(work_dir)
    if stack_obj is None:
        return None
    pairs = sorted(stack_obj.pairsDict)
    ds_names = stack_obj.get_dataset_list()
    box, xstep, ystep = i_dict["box"], i_dict["xstep"], i_dict["ystep"]
    _, length, width = stack_obj.get_size(box=box, xstep=xstep, ystep=ystep)
    loaded_at = stack_file.stat().st_mtime
    with h5py.File(stack_file, "r") as f:
        old = [f"{a.decode()}_{b.decode()}" for a, b in f["date"][:]]
        shape = f["unwrapPhase"].shape if "unwrapPhase" in f else None
        present = {name for name in f if f[name].ndim == 3 and name in APPENDABLE}
    new = [_date12(p) for p in pairs]
    if set(old) - set(new):
        # MintPy's update mode keeps a file that holds every pair it would load, so pairs
        # gone (an excluded date) would stay in the network: it must load afresh.
        print(f"pairs no longer on disk: {sorted(set(old) - set(new))}; {stack_file} removed")
        stack_file.unlink()
        return None
    if (
        shape is None
        or shape[1:] != (length, width)
        or old != sorted(old)
        or set(ds_names) - set(APPENDABLE)
        or present != set(ds_names)
    ):
        return None  # not a growth of the same stack: MintPy's full load decides
    added = sorted(set(new) - set(old))
    first = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), len(old))
    stale = {
        i
        for i, pair in enumerate(pairs[:first])
        if _newest_mtime(stack_obj.pairsDict[pair].datasetDict.values()) > loaded_at
    }
    if not added and not stale:
        return None
    rows = sorted(stale) + list(range(first, len(pairs)))
    atomic.write_text(marker, str(stack_file))
    try:
        _write(stack_file, stack_obj, i_dict, pairs, rows)
    except BaseException:
        stack_file.unlink(missing_ok=True)  # half-written: MintPy loads afresh
        raise
    finally:
        marker.unlink(missing_ok=True)
    return AppendResult(stack_file, tuple(added), len(rows), len(pairs))


def _write(
    stack_file: Path, stack_obj: Any, i_dict: dict[str, Any], pairs: list[Any], rows: list[int]
) -> None:
    import h5py

    ds_names = stack_obj.get_dataset_list()
    box, xstep, ystep = i_dict["box"], i_dict["xstep"], i_dict["ystep"]
    with h5py.File(stack_file, "r+") as f:
        mli_method = i_dict["method"]
        for name in [n for n in APPENDABLE if n in ds_names]:  # write2hdf5's order
            if name == "connectComponent":
                mli_method = "nearest"  # and so for every dataset after it, as in write2hdf5
            ds = f[name]
            ds.resize(len(pairs), axis=0)
            for i in rows:
                ds[i] = stack_obj.pairsDict[pairs[i]].read(
                    name, box=box, xstep=xstep, ystep=ystep, mli_method=mli_method
                )[0]
            ds.attrs["MODIFICATION_TIME"] = str(time.time())
        for name in [n for n in f if n not in ds_names]:
            del f[name]  # date/bperp/dropIfgram are rewritten; later steps' datasets go
        f.create_dataset("date", data=np.array(pairs, dtype=np.bytes_))
        bperp = [stack_obj.pairsDict[p].get_perp_baseline(family=stack_obj.dsName0) for p in pairs]
        f.create_dataset("bperp", data=np.array(bperp, dtype=np.float32))
        f.create_dataset("dropIfgram", data=np.ones(len(pairs), dtype=np.bool_))
        f.attrs.clear()
        for key, value in _fresh_metadata(stack_obj, i_dict).items():
            f.attrs[key] = value


def append_ifgram_stack(work_dir: Path, log_path: Path) -> AppendResult | None:
    """Bring ``<work_dir>/inputs/ifgramStack.h5`` up to date with the interferograms on disk
    by writing only what changed; None when there is nothing to append or MintPy's load_data
    must load the stack afresh. ``<work_dir>/smallbaselineApp.cfg`` (as written for the
    MintPy steps) says where the interferograms are; MintPy's messages go to ``log_path``.
    """
    work = Path(work_dir).resolve()
    stack_file = work / "inputs" / "ifgramStack.h5"
    marker = work / _MARKER
    if marker.is_file():  # an earlier append was killed: its file is not trustworthy
        stack_file.unlink(missing_ok=True)
        marker.unlink()
    if not stack_file.is_file():
        return None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        return _append(stack_file, work, marker)


append_ifgrams_task = task(name="mintpy-append-ifgrams", cache_policy=NO_CACHE, tags={"mintpy"})(
    append_ifgram_stack
)
