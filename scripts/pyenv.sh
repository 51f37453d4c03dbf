#!/usr/bin/env bash
# A Python environment for the tests that read Parquet files back with pyarrow: a venv under the
# cargo target directory (so `cargo clean` removes it) with pinned packages. Prints the path of
# its python on stdout; everything else goes to stderr. Safe to call again (it does nothing once
# the environment is there) and from several tests at once (a lock serializes them).
#
#   scripts/pyenv.sh            # -> /path/to/target/pyenv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."

PYARROW_VERSION=23.0.1
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$TARGET"
TARGET=$(cd "$TARGET" && pwd)
VENV=$TARGET/pyenv
PYTHON=$VENV/bin/python

ready() {
  [ -x "$PYTHON" ] && "$PYTHON" -c "import sys, pyarrow; sys.exit(pyarrow.__version__ != '$PYARROW_VERSION')" 2>/dev/null
}

exec 9>"$TARGET/pyenv.lock"
flock 9
if ready; then
  echo "$PYTHON"
  exit 0
fi

# A machine with only Rust may lack Python's venv module: install it (Debian packages).
if ! command -v python3 >/dev/null || ! python3 -c "import venv, ensurepip" 2>/dev/null; then
  echo "pyenv: installing python3 and python3-venv..." >&2
  if command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >&2
  else
    echo "pyenv: python3 with its venv module is needed, and apt-get is not here to install it" >&2
    exit 1
  fi
fi

echo "pyenv: creating $VENV with pyarrow $PYARROW_VERSION..." >&2
rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$PYTHON" -m pip install --quiet --disable-pip-version-check "pyarrow==$PYARROW_VERSION" >&2
ready
echo "$PYTHON"
