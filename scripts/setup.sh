#!/bin/sh
# Install what erofsd needs on Debian 12: apt packages, a virtualenv, the package.
# Idempotent and quick when everything is already there.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="erofs-utils squashfs-tools squashfuse skopeo docker-registry apache2-utils fuse3 libfuse3-dev
pkg-config gcc umoci tar linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev
cpio kmod qemu-system-x86 busybox-static e2fsprogs containerd runc
golang-github-containerd-containerd-dev debootstrap xfsprogs"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: run as root to install:$missing" >&2
        exit 1
    fi
    echo "setup: installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing erofsd into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
# containerd's API stubs, generated from Debian's .proto files (never committed)
.venv/bin/python scripts/gen_containerd_api.py
