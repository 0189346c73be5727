#!/bin/sh
# The erofsd demo: build a layered image from real trees on this machine,
# then look inside it. Everything goes to ./demo-out (removed first).
set -eu
cd "$(dirname "$0")/.."
E=".venv/bin/erofsd"
OUT=demo-out
STDLIB=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$OUT"
mkdir -p "$OUT/base/usr/lib/python3" "$OUT/app/app" "$OUT/app/usr/lib/python3/json"
step "two layers from real trees: a base with part of the Python stdlib, an app on top"
for pkg in json email http sqlite3 asyncio; do
    cp -a "$STDLIB/$pkg" "$OUT/base/usr/lib/python3/"
done
printf 'import json\nprint(json.dumps({"hello": "erofsd"}))\n' > "$OUT/app/app/main.py"
touch "$OUT/app/usr/lib/python3/json/.wh.tool.py"   # the app layer deletes a base file
echo "base: $(find "$OUT/base" -type f | wc -l) files; app: main.py and a whiteout of json/tool.py"

step "erofsd build $OUT/base $OUT/app $OUT/image --tag demo"
$E build "$OUT/base" "$OUT/app" "$OUT/image" --tag demo

step "erofsd inspect oci:$OUT/image:demo"
$E inspect "oci:$OUT/image:demo"

step "erofsd ls -l oci:$OUT/image:demo /usr/lib/python3/json   (tool.py is gone)"
$E ls -l "oci:$OUT/image:demo" /usr/lib/python3/json

step "erofsd cat oci:$OUT/image:demo /app/main.py"
$E cat "oci:$OUT/image:demo" /app/main.py

step "erofsd check oci:$OUT/image:demo   (every chunk against its sha256)"
$E check "oci:$OUT/image:demo"

step "the image is a plain OCI layout: bootstrap + one blob per layer"
ls -l "$OUT/image/blobs/sha256"
