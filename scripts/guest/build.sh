#!/bin/sh
# Build, once per machine, the kernel and initramfs the fscache tests boot
# in qemu: Debian's linux-source-6.1 with kernel.config merged into
# tinyconfig, and busybox-static with ./init. The results are cached under
# $EROFSD_GUEST_CACHE (default /var/cache/erofsd-guest), keyed by a hash of
# the source version and the config (and of busybox and init), and this
# prints their two paths.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${EROFSD_GUEST_CACHE:-/var/cache/erofsd-guest}
source=/usr/src/linux-source-6.1.tar.xz
[ -f "$source" ] || { echo "guest: $source is missing (apt-get install linux-source-6.1)" >&2; exit 2; }

version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( (echo "$version"; cat "$here/kernel.config") | sha256sum | cut -c1-16)
kernel="$cache/kernel-$key/bzImage"
if [ ! -f "$kernel" ]; then
    work=$(mktemp -d /var/tmp/erofsd-kernel-XXXXXX)
    trap 'rm -rf "$work"' EXIT
    echo "guest: building the 6.1 kernel ($version); about 6 minutes on 2 cores" >&2
    tar -C "$work" -xf "$source"
    cd "$work"/linux-source-6.1
    make -s tinyconfig >/dev/null
    scripts/kconfig/merge_config.sh -m .config "$here/kernel.config" >/dev/null
    make -s olddefconfig >/dev/null
    for option in $(sed 's/=y$//' "$here/kernel.config"); do
        grep -q "^$option=y" .config || { echo "guest: $option did not stick" >&2; exit 1; }
    done
    make -s -j"$(nproc)" bzImage >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; exit 1; }
    mkdir -p "$(dirname "$kernel")"
    cp arch/x86/boot/bzImage "$kernel.tmp"
    mv "$kernel.tmp" "$kernel"
    cd /
fi

bb_version=$(dpkg-query -W -f='${Version}' busybox-static)
ikey=$( (echo "$bb_version"; cat "$here/init") | sha256sum | cut -c1-16)
initramfs="$cache/initramfs-$ikey.cpio.gz"
if [ ! -f "$initramfs" ]; then
    root=$(mktemp -d /var/tmp/erofsd-initramfs-XXXXXX)
    mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys"
    cp /bin/busybox "$root/bin/busybox"
    cp "$here/init" "$root/init"
    chmod 755 "$root/init"
    mknod -m 600 "$root/dev/console" c 5 1
    mkdir -p "$(dirname "$initramfs")"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9 > "$initramfs.tmp")
    mv "$initramfs.tmp" "$initramfs"
    rm -rf "$root"
fi
echo "$kernel"
echo "$initramfs"
