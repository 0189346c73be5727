#!/bin/sh
# The kernel and initramfs the fscache tests boot in qemu, built once per
# machine: Debian's linux-source-6.1 with kernel.config merged into
# tinyconfig, and busybox-static with ./init. They are cached under
# $EROFSD_GUEST_CACHE (default /var/cache/erofsd-guest), keyed by a hash of
# the source version and the config (and of busybox and init); this prints
# their two paths on stdout.
#
#   build.sh            build what is missing (make test runs this before pytest)
#   build.sh --cached   only print the paths; exit 3 if they are not built
#
# One build runs at a time (a lock in the cache); an interrupted build
# removes its work folder, and one killed outright (SIGKILL) leaves a
# folder the next run removes first.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${EROFSD_GUEST_CACHE:-/var/cache/erofsd-guest}
source=/usr/src/linux-source-6.1.tar.xz
[ -f "$source" ] || { echo "guest: $source is missing (apt-get install linux-source-6.1)" >&2; exit 2; }

version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( (echo "$version"; cat "$here/kernel.config") | sha256sum | cut -c1-16)
kernel="$cache/kernel-$key/bzImage"
bb_version=$(dpkg-query -W -f='${Version}' busybox-static)
ikey=$( (echo "$bb_version"; cat "$here/init") | sha256sum | cut -c1-16)
initramfs="$cache/initramfs-$ikey.cpio.gz"

if [ "${1:-}" = --cached ]; then
    if [ ! -f "$kernel" ] || [ ! -f "$initramfs" ]; then
        echo "guest: the fscache tests' kernel is not built in $cache: run 'make guest'" \
             "(about 5 minutes on 2 cores)" >&2
        exit 3
    fi
    echo "$kernel"
    echo "$initramfs"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # a second build waits here, then finds the first one's result
# Only a build that holds the lock works in these: what is here was left by a
# killed one (older versions built in /var/tmp/erofsd-kernel-*).
rm -rf "$cache"/.build-* /var/tmp/erofsd-kernel-* /var/tmp/erofsd-initramfs-*

work=""
child=""
cleanup() {
    if [ -n "$child" ]; then
        kill -TERM "-$child" 2>/dev/null || true  # the whole step (dash: no "--")
        wait "$child" 2>/dev/null || true
    fi
    [ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Run a long step in its own process group, waiting interruptibly, so that a
# signal to this script stops the step at once and cleanup removes its files.
step() {
    setsid "$@" &
    child=$!
    status=0
    wait "$child" || status=$?
    child=""
    return "$status"
}

if [ ! -f "$kernel" ]; then
    started=$(date +%s)
    echo "guest: building the 6.1 kernel ($version) for the fscache tests, once per machine:" \
         "about 5 minutes on 2 idle cores (up to 15 on busy ones)" >&2
    work=$(mktemp -d "$cache/.build-XXXXXX")
    step tar -C "$work" -xf "$source"
    cd "$work"/linux-source-6.1
    make -s tinyconfig >/dev/null
    scripts/kconfig/merge_config.sh -m .config "$here/kernel.config" >/dev/null
    make -s olddefconfig >/dev/null
    for option in $(sed 's/=y$//' "$here/kernel.config"); do
        grep -q "^$option=y" .config || { echo "guest: $option did not stick" >&2; exit 1; }
    done
    step sh -c "make -s -j$(nproc) bzImage >'$work/build.log' 2>&1" \
        || { tail -20 "$work/build.log" >&2; exit 1; }
    mkdir -p "$(dirname "$kernel")"
    cp arch/x86/boot/bzImage "$work/bzImage"
    mv "$work/bzImage" "$kernel"  # the same filesystem: the kernel appears whole or not at all
    cd /
    rm -rf "$work"
    work=""
    echo "guest: kernel built in $(( $(date +%s) - started )) s: $kernel" >&2
fi

if [ ! -f "$initramfs" ]; then
    work=$(mktemp -d "$cache/.build-XXXXXX")
    root="$work/root"
    mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys"
    cp /bin/busybox "$root/bin/busybox"
    cp "$here/init" "$root/init"
    chmod 755 "$root/init"
    mknod -m 600 "$root/dev/console" c 5 1
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9 > "$work/initramfs.cpio.gz")
    mv "$work/initramfs.cpio.gz" "$initramfs"
    rm -rf "$work"
    work=""
fi
echo "$kernel"
echo "$initramfs"
