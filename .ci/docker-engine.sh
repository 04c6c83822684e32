#!/usr/bin/env bash
# Make sure a Docker engine is installed and running on this machine.
#
# Idempotent: installs Debian's docker.io (plus debootstrap, needed by
# .ci/base-image.sh) only when `dockerd` is missing, starts `dockerd` by hand
# (there is no systemd here) only when `docker info` does not answer, and then
# waits (bounded) until the engine answers. Takes well under 2 s when the engine
# is already installed and running.
#
# The daemon is started with:
#   --storage-driver=overlay2   works on this machine's ext4 root
#   --iptables=false            no NAT/forwarding rules (and no need for the
#                               ip_tables kernel module)
#   --bridge=none               no docker0 bridge: containers get host
#                               networking (`--network host`) or none at all, so
#                               all traffic stays on 127.0.0.1
#   --ip-forward=false          leave the host's net.ipv4.ip_forward alone
# Log: /var/log/dockerd.log.
#
# Environment knobs:
#   DOCKER_ENGINE_WAIT   seconds to wait for the engine to answer (default 60)
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export DEBIAN_FRONTEND=noninteractive

LOG=/var/log/dockerd.log
WAIT="${DOCKER_ENGINE_WAIT:-60}"

say() { echo "docker-engine: $*" >&2; }

engine_answers() {
    # `docker info` exits non-zero at once when the daemon socket is absent;
    # the timeout guards against a daemon that hangs half-started.
    timeout 10 docker info >/dev/null 2>&1
}

# A `docker` client may exist (e.g. /usr/local/bin/docker) without an engine:
# test for the daemon binary, not the client.
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
# `docker run --init` needs docker-init: docker.io ships /usr/bin/docker-init
# as a symlink to tini-static from the tini package (a dependency). Ask for
# tini explicitly if it is missing anyway.
command -v docker-init >/dev/null 2>&1 || need+=(tini)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -q >/dev/null
    # --no-install-recommends: skips apparmor, needrestart, git, ... which the
    # engine does not need here.
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

if engine_answers; then
    exit 0
fi

if pgrep -x dockerd >/dev/null 2>&1; then
    say "a dockerd process exists but does not answer yet; waiting for it"
else
    say "starting dockerd (log: $LOG)"
    # A stale pid file from a killed daemon would not stop dockerd, but a stale
    # socket can confuse clients: dockerd recreates both.
    setsid nohup dockerd \
        --storage-driver=overlay2 \
        --iptables=false \
        --bridge=none \
        --ip-forward=false \
        >>"$LOG" 2>&1 </dev/null &
fi

deadline=$((SECONDS + WAIT))
until engine_answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        say "ERROR: the Docker engine did not answer within ${WAIT}s. Tail of $LOG:"
        tail -n 40 "$LOG" >&2 || true
        exit 1
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        say "ERROR: dockerd exited. Tail of $LOG:"
        tail -n 40 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
say "engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
