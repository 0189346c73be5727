"""Terminal views of command results (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .sizes import format_size


def print_inspect(info: dict) -> None:
    console = Console(soft_wrap=True)
    sb, counts = info["superblock"], info["counts"]
    console.print(f"[bold]image[/]      {info['image']}")
    if "manifest" in info:
        console.print(f"[bold]manifest[/]   {info['manifest']}")
        if "index" in info:
            console.print(f"[bold]index[/]      {info['index']} (the image is read as it is, "
                          "through this index)")
        boot = info["bootstrap"]
        console.print(f"[bold]bootstrap[/]  {boot['digest']} ({format_size(boot['size'])})")
    console.print(f"[bold]superblock[/] block size {sb['block_size']}, {sb['blocks']} blocks, "
                  f"root nid {sb['root_nid']}, {sb['inos']} inodes, "
                  f"features compat {sb['feature_compat']:#x} "
                  f"incompat {sb['feature_incompat']:#x}")
    console.print(f"[bold]tree[/]       {counts['directories']} directories, "
                  f"{counts['files']} files ({format_size(counts['file_bytes'])}), "
                  f"{counts['symlinks']} symlinks, {counts['others']} other")
    if info["devices"]:
        table = Table(title="blob devices", title_justify="left")
        for column in ("#", "tag", "blocks", "stored", "data", "compression"):
            table.add_column(column, justify="left" if column in ("tag", "compression")
                             else "right")
        blobs = info.get("blobs") or [{}] * len(info["devices"])
        for device, blob in zip(info["devices"], blobs, strict=True):
            stored = format_size(blob["size"]) if "size" in blob else "-"
            data = format_size(blob["data_size"]) if "data_size" in blob else "-"
            coding = blob.get("compression", "-")
            if "frames" in blob and blob["compression"] == "gzip":
                coding += f", {blob['frames']} spans"
            elif "frames" in blob and blob["compression"] != "none":
                coding += f", {blob['chunks']} chunks in {blob['frames']} frames"
            table.add_row(str(device["device"]), device["tag"] or "(empty)",
                          str(device["blocks"]), stored, data, coding)
        console.print(table)


def print_cache(volumes) -> None:
    console = Console(soft_wrap=True)
    if not volumes:
        console.print("the cache is empty")
        return
    table = Table()
    for column in ("volume", "blob", "stored", "data", "cached", "fetched", "on disk", "in use"):
        table.add_column(column, justify="left" if column in ("volume", "blob") else "right")
    for volume in volumes:
        for blob in volume.blobs:
            table.add_row(volume.volume, blob.blob[:19] + "…", format_size(blob.size),
                          format_size(blob.data_size), format_size(blob.cached_bytes),
                          format_size(blob.fetched_bytes),
                          format_size(blob.disk_bytes), "yes" if blob.in_use else "")
    console.print(table)


def print_status(view: dict) -> None:
    console = Console(soft_wrap=True)
    daemon = view.get("daemon", {})
    console.print(f"[bold]daemon[/] pid {daemon.get('pid')}, state {daemon.get('state_dir')}, "
                  f"fanotify {'yes' if daemon.get('fanotify') else 'no'}, "
                  f"rss {format_size(daemon.get('rss_bytes', 0))}")
    mounts = Table(title="mounts", title_justify="left")
    for column in ("name", "mountpoint", "mode", "volume", "blobs", "state", "image"):
        mounts.add_column(column)
    for m in view["mounts"]:
        mounts.add_row(m["name"], m["mountpoint"], m["mode"], m["volume"], str(len(m["blobs"])),
                       m.get("state", ""), m["image"])
    console.print(mounts)
    domains = Table(title="domains", title_justify="left")
    for column in ("domain", "mounts", "cookies"):
        domains.add_column(column)
    for d in view["domains"]:
        domains.add_row(d["domain_id"], str(d["mounts"]), str(d["cookies"]))
    console.print(domains)
    cookies = Table(title="cookies", title_justify="left")
    for column in ("volume", "blob", "refs", "stored", "data", "cached", "fetched", "read"):
        cookies.add_column(column, justify="right" if column not in ("volume", "blob") else "left")
    for c in view["cookies"]:
        cookies.add_row(c["volume"], c["blob"][:19] + "…", str(c["refcount"]),
                        format_size(c.get("size", 0)), format_size(c.get("data_size", 0)),
                        format_size(c.get("cached_bytes", 0)),
                        format_size(c.get("fetched_bytes", 0)), format_size(c.get("read_bytes", 0)))
    console.print(cookies)
