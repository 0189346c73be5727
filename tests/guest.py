"""Run a command in a qemu guest booted on a 6.1 kernel with EROFS over fscache.

The guest (scripts/guest/) sees the host's / read-only over virtio-9p and
chroots into it, so it runs this project's own Python and code; the work
folder is shared writable at its host path; an ext4 image is its cache
disk (cachefiles needs user xattrs). TCG only: nothing depends on KVM.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "scripts" / "guest" / "build.sh"


@dataclasses.dataclass
class GuestResult:
    rc: int | None  # None: the guest never ran the command to its end
    output: str
    dmesg: str
    console: str

    def dmesg_lines(self, *words: str) -> list[str]:
        return [line for line in self.dmesg.splitlines()
                if any(w in line for w in words)]


def unavailable() -> str | None:
    """Why a guest cannot be had here, or None."""
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed"
    if not Path("/usr/src/linux-source-6.1.tar.xz").exists():
        return "linux-source-6.1 is not installed"
    if not Path("/bin/busybox").exists():
        return "busybox-static is not installed"
    if os.geteuid() != 0:
        return "the guest shares the host's root: needs root"
    return None


def images() -> tuple[str, str]:
    """The kernel and initramfs, as `make guest` built them before pytest started.

    Building takes minutes, so no test does it: a test under a timeout would
    be killed half way (and a fresh machine would never get a green run).
    """
    result = subprocess.run([str(BUILD), "--cached"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    kernel, initramfs = result.stdout.split()
    return kernel, initramfs


def run(command: str, work: Path, *, images: tuple[str, str], timeout: float = 1200,
        cache_size: str = "512M") -> GuestResult:
    """Run a shell ``command`` in the guest, in ``work``; returns its rc, output and dmesg."""
    kernel, initramfs = images
    work = work.resolve()
    for name in ("guest-rc", "guest-output", "guest-dmesg"):
        (work / name).unlink(missing_ok=True)
    (work / "guest-command.sh").write_text(command)
    disk = work / "cache.ext4"
    disk.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", cache_size, str(disk)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk)], check=True)
    args = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1536", "-smp", "1", "-nographic",
            "-no-reboot", "-kernel", kernel, "-initrd", initramfs,
            "-append", f"console=ttyS0 panic=-1 quiet erofsd.work={work}",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
            "multidevs=remap",  # host mounts share inode numbers; keep them apart
            "-virtfs", f"local,path={work},mount_tag=work,security_model=none",
            "-drive", f"file={disk},if=virtio,format=raw"]
    try:
        console = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                                 errors="replace").stdout
    except subprocess.TimeoutExpired as e:
        console = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
    rc_file = work / "guest-rc"
    rc = int(rc_file.read_text().strip()) if rc_file.exists() else None
    return GuestResult(rc, _read(work / "guest-output"), _read(work / "guest-dmesg"), console)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
