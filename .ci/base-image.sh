#!/usr/bin/env bash
# Build the project's base Docker image for tests, without pulling anything.
#
#   debootstrap --variant=minbase bookworm  ->  rootfs in a temp dir
#   + a venv at /opt/venv (its bin/ first on PATH, so `python3` and `pip` are
#     the venv's: packages are installed there without --break-system-packages
#     and without touching Debian's own python3-* packages)
#   tar | docker import  ->  fiber-base:<tag>, also tagged fiber-base:latest
#
# <tag> is a hash of this script's own bytes: changing the recipe rebuilds,
# re-running with the image present is a no-op (well under 1 s).
# Progress goes to stderr; the last stdout line is the image name.
#
# Environment knobs:
#   FIBER_DEBIAN_MIRROR   Debian mirror for debootstrap
#                         (default http://deb.debian.org/debian)
#   FIBER_BASE_REPO       image repository name (default fiber-base)
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export DEBIAN_FRONTEND=noninteractive

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
REPO="${FIBER_BASE_REPO:-fiber-base}"
MIRROR="${FIBER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
INCLUDE=python3,python3-pip,python3-venv,ca-certificates
TAG="$(sha256sum "$SELF" | cut -c1-16)"
IMAGE="$REPO:$TAG"

say() { echo "base-image: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

finish() {
    # Keep :latest pointing at the image of the current recipe.
    docker tag "$IMAGE" "$REPO:latest" >&2
    echo "$IMAGE"
}

bash "$HERE/docker-engine.sh"

if have_image "$IMAGE"; then
    finish
    exit 0
fi

# Serialise concurrent builds (e.g. parallel test workers); re-check under lock.
exec 9>/var/lock/fiber-base-image.lock
flock 9
if have_image "$IMAGE"; then
    finish
    exit 0
fi

WORK="$(mktemp -d /var/tmp/fiber-base.XXXXXX)"
ROOTFS="$WORK/rootfs"
cleanup() {
    # debootstrap mounts proc/sys inside the target and may leave them mounted
    # when it fails: unmount everything below the work dir before deleting it.
    local m
    for m in $(awk -v w="$WORK" 'index($2, w"/") == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

t0=$SECONDS
say "debootstrap $SUITE ($INCLUDE) from $MIRROR into $ROOTFS"
if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1; then
    say "ERROR: debootstrap failed; tail of its log:"
    tail -n 30 "$WORK/debootstrap.log" >&2
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    exit 1
fi
say "debootstrap done in $((SECONDS - t0)) s"

say "creating /opt/venv"
chroot "$ROOTFS" /usr/bin/python3 -m venv /opt/venv >&2
chroot "$ROOTFS" /opt/venv/bin/python3 -m pip --version >&2

# Make it smaller: apt lists/caches, docs, man pages (byte-code caches stay:
# they make every container's python3 start faster).
rm -rf "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/var/cache/apt/archives/partial/* \
       "$ROOTFS"/usr/share/doc/* \
       "$ROOTFS"/usr/share/man/* \
       "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/root/.cache \
       "$ROOTFS"/var/log/apt/* \
       "$ROOTFS"/var/log/dpkg.log \
       "$ROOTFS"/var/log/bootstrap.log
# Docker supplies these at run time.
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"

t1=$SECONDS
say "importing as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV VIRTUAL_ENV=/opt/venv' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >&2
say "import done in $((SECONDS - t1)) s"

say "image python: $(docker run --rm --network host "$IMAGE" python3 --version 2>&1)"
say "image size: $(docker image inspect --format '{{.Size}}' "$IMAGE") bytes"
finish
