#!/usr/bin/env bash
# Build ISCE2 from source into PREFIX, with its own Python environment, without conda.
#
#   scripts/build-isce2.sh SOURCE PREFIX     (what `make isce2` calls)
#
# SOURCE: an ISCE2 source tarball (.tar.gz) or an unpacked source directory.
# PREFIX: where it goes. Afterwards:
#   PREFIX/venv/                  ISCE2's own Python (numpy < 2.4, scipy, h5py, lxml, GDAL + gdal_array, snaphu)
#   PREFIX/packages/isce/         the isce package (import isce)
#   PREFIX/share/isce2/topsStack/ topsStack scripts, where conda-forge puts them ($ISCE_STACK)
#   PREFIX/env.sh                 `source` it to use this ISCE2 (insarflow: isce2.env_script)
# A second call with the same source finds PREFIX/.built (the source's checksum) and does nothing.
set -euo pipefail

usage() { echo "usage: $0 SOURCE(tar.gz or directory) PREFIX" >&2; exit 2; }
[ $# -eq 2 ] || usage
source_arg=$1
prefix=$2
[ -e "$source_arg" ] || { echo "error: ISCE2 source $source_arg does not exist (ISCE2_SOURCE)" >&2; exit 2; }
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
python=${ISCE2_PYTHON:-python3}
jobs=${ISCE2_JOBS:-$(nproc)}

# ---------------------------------------------------------------- idempotence
if [ -f "$source_arg" ]; then
    source_id=$(sha256sum "$source_arg" | cut -d' ' -f1)
else
    # A directory: hash the list of files with their sizes and times (cheap, changes on edit).
    source_id=$(cd "$source_arg" && find . -type f -printf '%p %s %T@\n' | sort | sha256sum | cut -d' ' -f1)
fi
# This script's own recipe counts too: a changed recipe rebuilds.
source_id="$source_id $(sha256sum "$0" | cut -d' ' -f1)"
stamp="$prefix/.built"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$source_id" ] && [ -f "$prefix/env.sh" ]; then
    echo "ISCE2 in $prefix is already built from this source; nothing to do."
    exit 0
fi

# ---------------------------------------------------------------- Debian packages
packages=(cmake gfortran g++ make libfftw3-dev libgdal-dev libhdf5-dev python3-venv python3-dev)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "error: ISCE2 needs these Debian packages: ${missing[*]}" >&2
        echo "  install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# ---------------------------------------------------------------- ISCE2's Python
gdal_version=$(gdal-config --version)
if [ ! -x "$prefix/venv/bin/python" ]; then
    "$python" -m venv "$prefix/venv"
fi
pip=("$prefix/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip setuptools wheel
# numpy 2.4 breaks ISCE2 2.6.5 (Poly2D.polyfit in fullBurst_resample); 2.3 works.
# shapely: stackSentinel.py; requests: fetchOrbit.py (orbits on the fly, unused by insarflow);
# snaphu: insarflow's tiled unwrapping (tasks/topsstack/isce_unwrap_tiles.py).
"${pip[@]}" "numpy>=1.26,<2.4" scipy h5py lxml cython shapely requests snaphu
# Built in pip's isolation the bindings silently lack osgeo.gdal_array: build them here.
"${pip[@]}" --no-build-isolation "gdal==$gdal_version"
"$prefix/venv/bin/python" -c "from osgeo import gdal_array" \
    || { echo "error: GDAL bindings lack gdal_array" >&2; exit 1; }

# ---------------------------------------------------------------- source
work="$prefix/build"
rm -rf "$work"
mkdir -p "$work"
if [ -f "$source_arg" ]; then
    tar -xzf "$source_arg" -C "$work"
    src=$(find "$work" -mindepth 1 -maxdepth 2 -name CMakeLists.txt -printf '%h\n' | head -n1)
else
    src=$(cd "$source_arg" && pwd)
fi
[ -n "$src" ] && [ -f "$src/CMakeLists.txt" ] || { echo "error: no CMakeLists.txt in $source_arg" >&2; exit 1; }

# ---------------------------------------------------------------- build
cmake -S "$src" -B "$work/cmake" \
    -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DPYTHON_MODULE_DIR=packages \
    -DPython_EXECUTABLE="$prefix/venv/bin/python" \
    -DCMAKE_CUDA_COMPILER=OFF \
    -DCMAKE_DISABLE_FIND_PACKAGE_OpenCV=ON \
    -DCMAKE_DISABLE_FIND_PACKAGE_Motif=ON \
    -DCMAKE_BUILD_TYPE=Release > "$work/cmake.log"
make -C "$work/cmake" -j"$jobs" > "$work/make.log" 2>&1 \
    || { tail -n 40 "$work/make.log" >&2; exit 1; }
make -C "$work/cmake" install > "$work/install.log" 2>&1 \
    || { tail -n 40 "$work/install.log" >&2; exit 1; }
# `make install` leaves out contrib/stack; conda-forge puts topsStack here ($ISCE_STACK).
rm -rf "$prefix/share/isce2"
mkdir -p "$prefix/share/isce2"
cp -r "$src/contrib/stack/topsStack" "$prefix/share/isce2/topsStack"
chmod +x "$prefix/share/isce2/topsStack/"*.py
rm -rf "$work"

# ---------------------------------------------------------------- env.sh
cat > "$prefix/env.sh" <<ENV
# ISCE2 built from source into $prefix: source this file to use it.
export ISCE_HOME="$prefix/packages/isce"
export ISCE_STACK="$prefix/share/isce2"
export PATH="$prefix/venv/bin:$prefix/bin:\$ISCE_STACK/topsStack\${PATH:+:\$PATH}"
export PYTHONPATH="$prefix/packages:\$ISCE_STACK\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$prefix/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
unset VIRTUAL_ENV PYTHONHOME
ENV

# ---------------------------------------------------------------- check
# shellcheck disable=SC1091
version=$(bash -c "source '$prefix/env.sh' && python3 -c 'import isce, osgeo.gdal_array; print(isce.__version__)'" 2>/dev/null | tail -n1)
[ -n "$version" ] || { echo "error: the build does not import (source $prefix/env.sh; python3 -c 'import isce')" >&2; exit 1; }
echo "$source_id" > "$stamp"
echo "ISCE2 $version built into $prefix; use it with: source $prefix/env.sh"
