"""A stand-in ISCE2 prefix laid out like ``make isce2``'s, for checks that need no real ISCE2.

Its ``python3`` is the test interpreter with a stub ``isce`` package (and ``osgeo`` stubs)
and a ``snaphu`` stub on PYTHONPATH, and ``stackSentinel.py`` exists: enough for the
environment probe.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path


def fake_isce2(
    prefix: Path, *, gdal_array: bool = True, snaphu: bool = True, version: str = "2.6.5"
) -> Path:
    """Write the prefix; return its ``env.sh``. ``snaphu=False``: importing it fails."""
    packages = prefix / "packages"
    (packages / "isce").mkdir(parents=True)
    (packages / "isce" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    (packages / "osgeo").mkdir()
    (packages / "osgeo" / "__init__.py").write_text("")
    (packages / "osgeo" / "gdal.py").write_text("__version__ = '3.6.2'\n")
    if gdal_array:
        (packages / "osgeo" / "gdal_array.py").write_text("")
    snaphu_stub = (
        "__version__ = '0.4.1'\n" if snaphu else "raise ImportError('No module named snaphu')\n"
    )
    (packages / "snaphu.py").write_text(snaphu_stub)
    script = prefix / "share" / "isce2" / "topsStack" / "stackSentinel.py"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    bin_dir = prefix / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env_sh = prefix / "env.sh"
    env_sh.write_text(
        f'export PATH="{bin_dir}:{prefix}/share/isce2/topsStack:$PATH"\n'
        f'export PYTHONPATH="{packages}"\n'
        f'export ISCE_STACK="{prefix}/share/isce2"\n'
    )
    return env_sh
