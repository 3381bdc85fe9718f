#!/usr/bin/env bash
# Builds the kcore wheel with maturin (`pip install ./python`) into a venv, checks
# the .pyi stubs against the module with mypy's stubtest, and runs the pytest suite.
#
#   KCORE_VENV        venv to use/create (default: target/kcore-venv-bindings)
#   CARGO_TARGET_DIR  honoured by the wheel build and the kcored build
#   KCORE_WHEEL_PROFILE  cargo profile for the wheel (default: dev; "release" for a real one)
#   KCORED            kcored binary for the Client tests (default: built here)
#   PYTHON            interpreter for the venv (default: python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="${KCORE_VENV:-$repo/target/kcore-venv-bindings}"
python="${PYTHON:-python3}"
profile="${KCORE_WHEEL_PROFILE:-dev}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

if [ ! -x "$venv/bin/python" ]; then
    echo "run-tests: creating venv $venv"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
# the maturin build backend runs the `maturin` executable of the venv
export PATH="$venv/bin:$PATH"
"$py" -m pip install --quiet --disable-pip-version-check 'maturin>=1.9,<2' 'pytest>=7' 'mypy>=1.10' kubernetes

echo "run-tests: building and installing the wheel (profile $profile)"
# maturin is already in the venv: build without an isolated environment.
MATURIN_PEP517_ARGS="--profile $profile" \
    "$py" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
    --force-reinstall --no-deps ./python

if [ -z "${KCORED:-}" ]; then
    echo "run-tests: building kcored for the Client tests"
    cargo build --quiet -p kcored --bin kcored
    KCORED="$target_dir/debug/kcored"
fi
export KCORED

# Run from outside the source tree so `import kcore` is the installed wheel.
cd "$repo/python/tests"
echo "run-tests: stubtest"
"$py" -m mypy.stubtest kcore
echo "run-tests: mypy on the tests (the stubs as a user sees them)"
"$py" -m mypy --strict --no-incremental --cache-dir=/dev/null "$repo/python/tests"
echo "run-tests: pytest"
"$py" -m pytest -q -p no:cacheprovider "$repo/python/tests" "$@"
