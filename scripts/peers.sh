#!/usr/bin/env bash
# The peers, run locally for `loadgen paper` and scripts/bench-kafka.sh:
# the Kafka paper's RabbitMQ and ActiveMQ from Debian's packages, and Tansu
# (its current release is the crate nisshi) as a Kafka-compatible peer,
# built from crates.io.
#
#   scripts/peers.sh install [rabbitmq|activemq|tansu]
#       apt-get installs rabbitmq-server and activemq if missing (their
#       system services are not started: RUNLEVEL=1); with `tansu`, only
#       builds Tansu instead (below). Prints nothing on stdout but, for
#       tansu, the binary's path.
#   scripts/peers.sh start rabbitmq|activemq|tansu DIR PORT paper|durable
#       runs the peer in the foreground (exec: the caller's child is the
#       server), listening on 127.0.0.1:PORT (AMQP 0-9-1 for RabbitMQ, STOMP
#       for ActiveMQ), every file under DIR. `paper`: the store flushes
#       asynchronously, as in the paper; `durable`: ActiveMQ's journal is
#       fsynced on every store (RabbitMQ needs no setting: durability is
#       asked per message, by publisher confirms).
#
#
# Tansu: nisshi $NISSHI_VERSION with only its memory:// engine (the
# `dynostore` feature), `cargo +nightly install --locked` into
# ~/.cache/broker/nisshi-VERSION (BROKER_PEERS_CACHE overrides
# ~/.cache/broker): it needs rustc 1.96 or later, so a nightly toolchain of
# rustup's when stable is older (NISSHI_TOOLCHAIN overrides the choice).
# Started with memory://, it keeps every message in memory and is not
# durable, in both modes; the mode only labels the run.
#
# The caller stops the peer with SIGTERM (loadgen does, then SIGKILL).
set -euo pipefail

die() { echo "peers.sh: $*" >&2; exit 1; }

NISSHI_VERSION=${NISSHI_VERSION:-0.8.1}
cache=${BROKER_PEERS_CACHE:-$HOME/.cache/broker}
nisshi_root=$cache/nisshi-$NISSHI_VERSION
nisshi_bin=$nisshi_root/bin/nisshi

install_tansu() {
    if [ -x "$nisshi_bin" ]; then
        echo "$nisshi_bin"
        return 0
    fi
    command -v cargo >/dev/null || die "cargo not found (Tansu builds from crates.io)"
    local toolchain=${NISSHI_TOOLCHAIN:-}
    if [ -z "$toolchain" ]; then
        # rustc 1.96 or later: stable if it is new enough, else nightly.
        local minor
        minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
        if [ "$minor" -ge 96 ] 2>/dev/null; then toolchain=stable; else toolchain=nightly; fi
    fi
    echo "peers.sh: building nisshi $NISSHI_VERSION (Tansu) with +$toolchain; this takes a while" >&2
    # Its own target directory, kept, so a rebuild is incremental.
    CARGO_TARGET_DIR=$cache/nisshi-build cargo "+$toolchain" install nisshi \
        --version "$NISSHI_VERSION" --locked --no-default-features --features dynostore \
        --root "$nisshi_root" >&2
    [ -x "$nisshi_bin" ] || die "cargo install did not leave $nisshi_bin"
    echo "$nisshi_bin"
}

start_tansu() {
    local dir=$1 port=$2
    local bin
    bin=$(install_tansu)
    # nisshi reads a .env from its working directory: an empty one of ours.
    cd "$dir"
    : > .env
    export RUST_LOG=${RUST_LOG:-warn}
    exec "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://nisshi/
}

install() {
    local missing=()
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
    [ -e /usr/share/activemq/bin/activemq.jar ] || missing+=(activemq)
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install ${missing[*]}"
    echo "peers.sh: installing ${missing[*]} from Debian's packages" >&2
    # Apt's output goes to stderr: stdout belongs to the caller.
    apt-get update -q >&2
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

start_rabbitmq() {
    local dir=$1 port=$2
    mkdir -p "$dir/mnesia" "$dir/log"
    # No plugins: the management plugin alone would cost a core's worth of start-up.
    echo '[].' > "$dir/enabled_plugins"
    cat > "$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$port
loopback_users = none
EOF
    export HOME=$dir
    export RABBITMQ_NODENAME="loadgen$port@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$port
    export RABBITMQ_DIST_PORT=$((port + 10000))
    export RABBITMQ_MNESIA_BASE=$dir/mnesia
    export RABBITMQ_LOG_BASE=$dir/log
    export RABBITMQ_CONFIG_FILE=$dir/rabbitmq
    export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
    export RABBITMQ_PID_FILE=$dir/rabbitmq.pid
    exec /usr/lib/rabbitmq/bin/rabbitmq-server
}

start_activemq() {
    local dir=$1 port=$2 mode=$3 sync
    case $mode in
        paper) sync=never ;;
        durable) sync=always ;;
    esac
    mkdir -p "$dir/conf" "$dir/data"
    cp /etc/activemq/instances-available/main/log4j2.properties "$dir/conf/"
    cat > "$dir/conf/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false"
          brokerName="loadgen" dataDirectory="$dir/data" schedulerSupport="false">
    <persistenceAdapter>
      <!-- $mode: journal fsync $sync -->
      <kahaDB directory="$dir/data/kahadb" journalDiskSyncStrategy="$sync"/>
    </persistenceAdapter>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:$port"/>
    </transportConnectors>
  </broker>
</beans>
EOF
    local java
    java=$(command -v java) || die "java not found (activemq depends on it)"
    cd "$dir"
    exec "$java" -Xms512M -Xmx512M -Dorg.apache.activemq.UseDedicatedTaskRunner=true \
        --add-reads=java.xml=java.logging \
        --add-opens java.base/java.security=ALL-UNNAMED \
        --add-opens java.base/java.net=ALL-UNNAMED \
        --add-opens java.base/java.lang=ALL-UNNAMED \
        --add-opens java.base/java.util=ALL-UNNAMED \
        --add-opens java.naming/javax.naming.spi=ALL-UNNAMED \
        --add-opens java.rmi/sun.rmi.transport.tcp=ALL-UNNAMED \
        --add-opens java.base/java.util.concurrent=ALL-UNNAMED \
        --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED \
        -Dlog4j2.configurationFile="$dir/conf/log4j2.properties" \
        -Dactivemq.classpath="$dir/conf:/usr/share/activemq/lib/" \
        -Dactivemq.home=/usr/share/activemq \
        -Dactivemq.base="$dir" \
        -Dactivemq.conf="$dir/conf" \
        -Dactivemq.data="$dir/data" \
        -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$dir/conf/activemq.xml"
}

case ${1:-} in
    install)
        case ${2:-} in
            tansu) install_tansu ;;
            ""|rabbitmq|activemq) install ;;
            *) die "unknown peer $2 (rabbitmq, activemq or tansu)" ;;
        esac
        ;;
    start)
        [ $# -eq 5 ] || die "usage: peers.sh start rabbitmq|activemq|tansu DIR PORT paper|durable"
        case $5 in paper|durable) ;; *) die "mode must be paper or durable, not $5" ;; esac
        [ "$2" = tansu ] || install
        case $2 in
            tansu) start_tansu "$3" "$4" ;;
            rabbitmq) start_rabbitmq "$3" "$4" ;;
            activemq) start_activemq "$3" "$4" "$5" ;;
            *) die "unknown peer $2 (rabbitmq, activemq or tansu)" ;;
        esac
        ;;
    *) die "usage: peers.sh install [rabbitmq|activemq|tansu] | start rabbitmq|activemq|tansu DIR PORT paper|durable" ;;
esac
