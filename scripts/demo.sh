#!/bin/sh
# The erofsd demo, as root: two images that share a base layer, built from
# real trees on this machine, pushed to a registry on 127.0.0.1, mounted
# lazily in one shared domain. The shared blob is fetched once.
# Everything lives in ./demo-out (removed first) and is cleaned up at the end.
set -eu
cd "$(dirname "$0")/.."
E=".venv/bin/erofsd"
OUT="$PWD/demo-out"
STDLIB=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
export EROFSD_SOCKET="$OUT/erofsd.sock"
export EROFSD_STATE_DIR="$OUT/state"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
    if [ -n "${CONTAINERD_PID:-}" ]; then
        $CTR task kill -s SIGKILL demo >/dev/null 2>&1 || true
        $CTR container delete demo >/dev/null 2>&1 || true
        $CTR image rm --sync "$IMAGE_NAME" >/dev/null 2>&1 || true
        kill "$CONTAINERD_PID" 2>/dev/null; wait "$CONTAINERD_PID" 2>/dev/null || true
    fi
    if [ -n "${SNAPSHOTTER_PID:-}" ]; then kill "$SNAPSHOTTER_PID" 2>/dev/null; wait "$SNAPSHOTTER_PID" 2>/dev/null || true; fi
    for m in "$OUT"/snapshots/mounts/*; do mountpoint -q "$m" 2>/dev/null && $E umount "$m" >/dev/null 2>&1 || true; done
    if [ -z "$HAD_RUN_CONTAINERD" ]; then  # what ctr and runc made outside demo-out
        rmdir /run/containerd/runc/default /run/containerd/runc /run/containerd/fifo \
              /run/containerd/s /run/containerd /sys/fs/cgroup/*/default 2>/dev/null || true
    fi
    for m in "$OUT"/mnt/*; do mountpoint -q "$m" 2>/dev/null && $E umount "$m" >/dev/null 2>&1 || true; done
    $E stop >/dev/null 2>&1 || true
    if [ -n "${REGISTRY_PID:-}" ]; then kill "$REGISTRY_PID" 2>/dev/null; wait "$REGISTRY_PID" || true; fi
}

if [ -d "$OUT/mnt" ]; then
    for m in "$OUT"/mnt/*; do umount -l "$m" 2>/dev/null || true; done
fi
rm -rf "$OUT"
mkdir -p "$OUT/base/usr/lib/python3" "$OUT/app1/app" "$OUT/app2/app" "$OUT/mnt/a" "$OUT/mnt/b"
HAD_RUN_CONTAINERD=$([ -d /run/containerd ] && echo yes || true)
trap cleanup EXIT

step "layers from real trees: a base with part of the Python stdlib, and two apps on it"
for pkg in json email http sqlite3 asyncio; do
    cp -a "$STDLIB/$pkg" "$OUT/base/usr/lib/python3/"
done
mkdir -p "$OUT/base/bin"  # a shell for the container at the end (busybox is static)
cp /bin/busybox "$OUT/base/bin/"
for tool in sh cat ls wc head; do ln -s busybox "$OUT/base/bin/$tool"; done
printf 'import json\nprint(json.dumps({"app": 1}))\n' > "$OUT/app1/app/main.py"
printf 'import email\nprint("app 2 reads", email.__name__)\n' > "$OUT/app2/app/main.py"
echo "base: $(find "$OUT/base" -type f | wc -l) files, $(du -sh "$OUT/base" | cut -f1)"

step "erofsd build: image A = base + app1, image B = base + app2 (one blob per layer)"
$E build "$OUT/base" "$OUT/app1" "$OUT/images" --tag a
$E build "$OUT/base" "$OUT/app2" "$OUT/images" --tag b
echo "the base blob is the same in both:"
$E inspect "oci:$OUT/images:a" --json | .venv/bin/python -c 'import json,sys; print("  A:", [b["digest"][:19] for b in json.load(sys.stdin)["blobs"]])'
$E inspect "oci:$OUT/images:b" --json | .venv/bin/python -c 'import json,sys; print("  B:", [b["digest"][:19] for b in json.load(sys.stdin)["blobs"]])'

step "a docker-registry on 127.0.0.1, and erofsd push"
.venv/bin/python -m erofsd.localregistry "$OUT/registry" > "$OUT/registry.host" 2>>"$OUT/registry.log" &
REGISTRY_PID=$!
while [ ! -s "$OUT/registry.host" ]; do sleep 0.1; done
HOST=$(cat "$OUT/registry.host")
$E push "oci:$OUT/images:a" "docker://$HOST/demo/app:a" --insecure
$E push "oci:$OUT/images:b" "docker://$HOST/demo/app:b" --insecure

step "erofsd mount A and B in domain d1 (the first mount starts the daemon)"
$E mount "docker://$HOST/demo/app:a" "$OUT/mnt/a" --domain-id d1 --insecure
$E mount "docker://$HOST/demo/app:b" "$OUT/mnt/b" --domain-id d1 --insecure

step "run the apps from the mounts, then read every file of both images"
python3 "$OUT/mnt/a/app/main.py"
python3 "$OUT/mnt/b/app/main.py"
tar cf - -C "$OUT/mnt/a" . | wc -c | xargs echo "bytes read through A:"
tar cf - -C "$OUT/mnt/b" . | wc -c | xargs echo "bytes read through B:"
diff -r "$OUT/mnt/a/usr" "$OUT/base/usr" && echo "A's tree equals its source"

step "erofsd status: base has refcount 2 and was fetched once (fetched <= size)"
$E status

step "erofsd cache ls: one copy of base on disk for the whole domain"
$E cache ls

step "erofsd umount: the domain goes away, the cached bytes stay"
$E umount "$OUT/mnt/a"
$E umount "$OUT/mnt/b"
$E cache ls

step "containerd runs image A lazily: the erofsd snapshotter, erofsd containerd pull, ctr run"
mkdir -p "$OUT/containerd"
cat > "$OUT/erofsd.toml" <<EOF
state_dir = "$EROFSD_STATE_DIR"
socket = "$EROFSD_SOCKET"
[registry]
insecure = ["$HOST"]
[snapshotter]
root = "$OUT/snapshots"
address = "$OUT/snapshotter.sock"
domain = "node"
EOF
cat > "$OUT/containerd.toml" <<EOF
version = 2
root = "$OUT/containerd/root"
state = "$OUT/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$OUT/containerd/containerd.sock"
[ttrpc]
  address = "$OUT/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$OUT/containerd/opt"
[proxy_plugins.erofsd]
  type = "snapshot"
  address = "$OUT/snapshotter.sock"
EOF
$E snapshotter --config "$OUT/erofsd.toml" 2>>"$OUT/snapshotter.log" &
SNAPSHOTTER_PID=$!
containerd --config "$OUT/containerd.toml" >>"$OUT/containerd.log" 2>&1 &
CONTAINERD_PID=$!
CTR="ctr --address $OUT/containerd/containerd.sock"
IMAGE_NAME="$HOST/demo/app:a"
while [ ! -S "$OUT/snapshotter.sock" ] || ! $CTR version >/dev/null 2>&1; do sleep 0.1; done
$E containerd pull "docker://$IMAGE_NAME" --address "$OUT/containerd/containerd.sock" --insecure
$CTR run --rm --snapshotter erofsd "$IMAGE_NAME" demo \
    sh -c 'echo "in the container: $(ls /usr/lib/python3 | wc -l) stdlib packages under /usr/lib/python3"; cat /app/main.py'
echo "containerd downloaded no layer; the blobs it read came through the erofsd cache:"
$E status --json | .venv/bin/python -c 'import json, sys
for c in json.load(sys.stdin)["cookies"]:
    print("  {}  refcount {}  fetched {} of {} bytes".format(
        c["blob"][:19], c["refcount"], c["fetched_bytes"], c["size"]))'

step "erofsd stop"
$CTR image rm --sync "$IMAGE_NAME" >/dev/null
$E stop

