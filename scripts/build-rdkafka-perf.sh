#!/usr/bin/env bash
# Builds librdkafka's own benchmark client, examples/rdkafka_performance,
# from the librdkafka source bundled in the rdkafka-sys crate (crates.io),
# for scripts/bench-kafka.sh. CI does not need it.
#
#   scripts/build-rdkafka-perf.sh [--print-path]
#
# Idempotent: the binary lands in target/rdkafka-perf/rdkafka_performance
# (or $RDKAFKA_PERF_DIR) and a second run only prints its path. The
# rdkafka-sys version is pinned below (RDKAFKA_SYS_VERSION overrides it);
# the crate is fetched by `cargo fetch` in a throwaway project, so nothing
# but cargo and the registry is involved. Debian's -dev packages the
# configure step wants (zlib, zstd, lz4) are installed with apt-get when
# missing (needs root); TLS, SASL/GSSAPI and curl are configured out: the
# benchmark runs on loopback in plaintext.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=${RDKAFKA_SYS_VERSION:-4.10.0+2.12.1}
out=${RDKAFKA_PERF_DIR:-$root/target/rdkafka-perf}
bin=$out/rdkafka_performance
stamp=$out/rdkafka-sys.version

say() { echo "build-rdkafka-perf.sh: $*" >&2; }

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    echo "$bin"
    exit 0
fi

# Debian's build dependencies, only the missing ones.
missing=()
for pkg in zlib1g-dev libzstd-dev liblz4-dev make gcc pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { say "need root to apt-get install ${missing[*]}"; exit 1; }
    say "installing ${missing[*]} from Debian's packages"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# The crate's source, through cargo: a throwaway project depending on it.
mkdir -p "$out"
proj=$out/fetch
mkdir -p "$proj/src"
cat > "$proj/Cargo.toml" <<TOML
[package]
name = "rdkafka-perf-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rdkafka-sys = { version = "=$version", default-features = false }

[workspace]
TOML
: > "$proj/src/lib.rs"
say "fetching rdkafka-sys $version"
cargo fetch --manifest-path "$proj/Cargo.toml" >&2
cargo_home=${CARGO_HOME:-$HOME/.cargo}
src=$(ls -d "$cargo_home"/registry/src/*/"rdkafka-sys-$version"/librdkafka 2>/dev/null | head -n 1 || true)
if [ -z "$src" ]; then
    # Older cargo versions only keep the .crate archive: unpack it ourselves.
    crate=$(ls "$cargo_home"/registry/cache/*/"rdkafka-sys-$version.crate" | head -n 1)
    tar -xzf "$crate" -C "$out"
    src=$out/rdkafka-sys-$version/librdkafka
fi
[ -f "$src/configure" ] || { say "no librdkafka source in $src"; exit 1; }

# Build in a copy: configure writes into its tree, and the registry's copy
# must stay as cargo unpacked it.
build=$out/librdkafka
rm -rf "$build"
cp -r "$src" "$build"
cd "$build"
say "configuring librdkafka ($(grep -m1 -o 'RD_KAFKA_VERSION  *0x[0-9a-f]*' src/rdkafka.h || true))"
# mklove's configure: no downloads (--install-deps is not given), no TLS,
# SASL or curl; zlib, zstd and lz4 from the system.
./configure --disable-ssl --disable-gssapi --disable-sasl --disable-curl \
    --enable-zlib --enable-zstd --enable-lz4-ext >&2
jobs=$(nproc 2>/dev/null || echo 2)
make -j"$jobs" -C src librdkafka.a >&2
make -j"$jobs" -C examples rdkafka_performance >&2
cp examples/rdkafka_performance "$bin.new"
mv "$bin.new" "$bin"
echo "$version" > "$stamp"
say "built $bin"
echo "$bin"
