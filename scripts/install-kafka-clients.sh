#!/usr/bin/env bash
# Installs the real Kafka clients that the Kafka-protocol integration tests
# (broker/tests/kafka_clients.rs, kafka_groups.rs) drive the broker with:
#
#   kcat            Debian's package (librdkafka's command-line client)
#   confluent-kafka PyPI, pinned; its wheel bundles librdkafka with every codec
#   kafka-python    PyPI, pinned; pure Python, so its codecs come as the
#                   pinned python-snappy (over cramjam), lz4 and zstandard
#
# The Python packages go into the environment of `$PYTHON -m pip` (PYTHON
# defaults to python3), the same interpreter the tests run the client scripts
# of broker/tests/kafka_clients/ with. PIP_BREAK_SYSTEM_PACKAGES lets pip
# install into an "externally managed" Debian python3 (PEP 668); pips that
# predate that rule ignore it.
#
# kafka-python since 2.1 defaults to an idempotent acks=all producer
# (KIP-679); the test scripts set acks and enable_idempotence explicitly.
#
# Idempotent: a fast no-op (no network) when everything pinned is there.
set -euo pipefail

python="${PYTHON:-python3}"
pins=(
    "confluent-kafka==2.16.1"
    "kafka-python==3.0.12"
    "python-snappy==0.7.3"
    "cramjam==2.14.0"
    "lz4==4.4.5"
    "zstandard==0.25.0"
)

# True when every pin above is what $python has installed.
python_pinned() {
    "$python" - "${pins[@]}" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
import confluent_kafka, kafka, snappy, lz4.frame, zstandard  # noqa: F401
EOF
}

if command -v kcat >/dev/null 2>&1 && python_pinned; then
    exit 0
fi

if ! command -v kcat >/dev/null 2>&1; then
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        sudo=(sudo)
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends kcat >&2
    }
    echo "install-kafka-clients: installing kcat" >&2
    if ! apt_install; then
        echo "install-kafka-clients: apt-get update, then installing kcat again" >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq >&2
        apt_install
    fi
fi

if ! python_pinned; then
    if ! "$python" -m pip --version >/dev/null 2>&1; then
        echo "install-kafka-clients: $python has no pip (needed for ${pins[*]})" >&2
        exit 1
    fi
    echo "install-kafka-clients: installing ${pins[*]} with $python -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 \
        "$python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
fi

if ! command -v kcat >/dev/null 2>&1; then
    echo "install-kafka-clients: kcat is still not on PATH after apt-get install kcat" >&2
    exit 1
fi
if ! python_pinned; then
    echo "install-kafka-clients: $python does not import ${pins[*]} after the install" >&2
    exit 1
fi
echo "install-kafka-clients: kcat $(kcat -V 2>&1 | awk '/^Version/ {print $2; exit}'), ${pins[*]}" >&2
