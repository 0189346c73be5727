"""A real containerd with the erofsd snapshotter, each in a private folder, for the tests.

containerd 1.6 and runc from Debian, started by hand with a config, root,
state and sockets of their own (the CRI plugin only when a test asks for
it); the snapshotter as ``erofsd snapshotter --config``, reaching the test's
own erofsd daemon. ``stop`` kills what they started (tasks, shims) by pid,
unmounts what is left under the folder and removes the cgroups runc made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemonutil import (
    DaemonProc,
    kill_all,
    processes_with,
    sweep,
    terminate,
    unmount_under,
    wait_until,
)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def erofsd_config(path: Path, daemon: DaemonProc, snapshotter_root: Path, address: str,
                  insecure: list[str], extra: str = "") -> Path:
    path.write_text(
        f'state_dir = "{daemon.state}"\nsocket = "{daemon.socket}"\n'
        f"[registry]\ninsecure = {insecure!r}\n".replace("'", '"')
        + f'[snapshotter]\nroot = "{snapshotter_root}"\naddress = "{address}"\n'
        + 'domain = "node"\n' + extra)
    return path


class SnapshotterProc:
    def __init__(self, root: Path, config: Path, address: str) -> None:
        self.root, self.config, self.address = root, config, address
        self.log = root / "snapshotter.log"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "erofsd", "snapshotter", "--config", str(self.config)],
                stdout=log, stderr=log, start_new_session=True)
        wait_until(lambda: os.path.exists(self.address) or self.process.poll() is not None)
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process:
            terminate(self.process)


class ContainerdProc:
    def __init__(self, root: Path, snapshotter_address: str, *, cri: bool = False,
                 plain_http: tuple[str, ...] = ()) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.address = str(root / "containerd.sock")
        self.config = root / "containerd.toml"
        disabled = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
        cri_config = ""
        if cri:  # kubelet's path: remote snapshots need the snapshotter's name and the labels
            cri_config = ('[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                          '  snapshotter = "erofsd"\n  disable_snapshot_annotations = false\n'
                          + "".join(f'[plugins."io.containerd.grpc.v1.cri".registry.mirrors'
                                    f'."{host}"]\n  endpoint = ["http://{host}"]\n'
                                    for host in plain_http))
        else:
            disabled.append("io.containerd.grpc.v1.cri")
        self.config.write_text(
            f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
            f"disabled_plugins = {disabled!r}\n".replace("'", '"')
            + f'[grpc]\n  address = "{self.address}"\n'
            + f'[ttrpc]\n  address = "{self.address}.ttrpc"\n'
            + f'[debug]\n  address = "{root}/debug.sock"\n'
            + f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{root}/opt"\n'
            + cri_config
            + f'[proxy_plugins.erofsd]\n  type = "snapshot"\n  address = "{snapshotter_address}"\n')
        self.log = root / "containerd.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(["containerd", "--config", str(self.config)],
                                            stdout=log, stderr=log, start_new_session=True)
        wait_until(lambda: self.ctr("version", check=False).returncode == 0
                   or self.process.poll() is not None)
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        self.containers: list[tuple[str, str]] = []  # (namespace, id) this test ran

    def ctr(self, *args: str, namespace: str = "default", check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(["ctr", "--address", self.address, "--namespace", namespace,
                                 *map(str, args)], capture_output=True, text=True,
                                timeout=timeout)
        if check:
            assert result.returncode == 0, f"ctr {' '.join(map(str, args))}: {result.stderr}"
        return result

    def run(self, image: str, container: str, *command: str, namespace: str = "default",
            detach: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        self.containers.append((namespace, container))
        return self.ctr("run", *(["-d"] if detach else ["--rm"]), "--snapshotter", "erofsd",
                        image, container, *command, namespace=namespace, check=check)

    def rootfs(self, container: str, namespace: str = "default") -> str:
        """The mount point of a running container's root."""
        return f"{self.root}/state/io.containerd.runtime.v2.task/{namespace}/{container}/rootfs"

    def stop(self) -> None:
        for namespace, container in self.containers:
            self.ctr("task", "kill", "-s", "SIGKILL", container, namespace=namespace,
                     check=False, timeout=30)
            self.ctr("task", "delete", "-f", container, namespace=namespace, check=False,
                     timeout=30)
            self.ctr("container", "delete", container, namespace=namespace, check=False,
                     timeout=30)
            for cgroup in (CGROUP_ROOT / namespace / container, CGROUP_ROOT / container):
                try:
                    cgroup.rmdir()
                except OSError:
                    pass
        terminate(self.process)
        kill_all(processes_with("containerd-shim", str(self.root)))  # shims left behind
        unmount_under(self.root)


class Node:
    """One node: an erofsd daemon, the snapshotter and containerd, all the test's own."""

    def __init__(self, root: Path, registry_host: str, *, cri: bool = False,
                 config_extra: str = "") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.daemon = DaemonProc(root / "d")
        self.snapshotter = self.containerd = None
        try:
            self.snapshotter_address = str(root / "snapshotter.sock")
            self.config = erofsd_config(root / "erofsd.toml", self.daemon, root / "snapshots",
                                        self.snapshotter_address, [registry_host], config_extra)
            self.snapshotter = SnapshotterProc(root, self.config, self.snapshotter_address)
            self.containerd = ContainerdProc(root / "c", self.snapshotter_address, cri=cri,
                                             plain_http=(registry_host,))
        except BaseException:
            self.stop()  # what did start must not outlive a test that never ran
            raise

    def restart_snapshotter(self) -> None:
        """Start the snapshotter again; containerd redials within 3 s (its proxy backoff)."""
        self.snapshotter.start()
        wait_until(lambda: self.containerd.ctr("snapshots", "--snapshotter", "erofsd", "ls",
                                               check=False).returncode == 0, timeout=30)

    def cri_pull(self, image: str) -> str:
        """kubelet's PullImage, to containerd's CRI plugin; the image's reference back."""
        import grpc

        import cri
        with grpc.insecure_channel(f"unix://{self.containerd.address}") as channel:
            stub = cri.api_pb2_grpc.ImageServiceStub(channel)
            return stub.PullImage(cri.api_pb2.PullImageRequest(
                image=cri.api_pb2.ImageSpec(image=image)), timeout=300).image_ref

    def pull(self, image: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "erofsd", "containerd", "pull", image, "--address",
             self.containerd.address, "--insecure", "--socket", self.daemon.socket, *extra],
            capture_output=True, text=True, timeout=300)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def stop(self) -> None:
        try:
            if self.containerd is not None:
                self.containerd.stop()
        finally:
            if self.snapshotter is not None:
                self.snapshotter.stop()
            self.daemon.cleanup()
            sweep(self.root, self.root)  # the image mounts live in the snapshotter's root


def have_containerd() -> str | None:
    """Why containerd cannot run here, or None."""
    import shutil
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "containerd runs containers as root"
    return None


NAMESPACES = ("default", "k8s.io")


def leftovers() -> list[Path]:
    """What containerd, ctr and runc make outside their folders, whatever the config says:
    /run/containerd/{fifo,s,runc/<ns>} and a cgroup per namespace and controller."""
    paths = [Path("/run/containerd"), *(Path("/run/containerd") / n for n in ("fifo", "s")),
             Path("/run/containerd/runc"),
             *(Path("/run/containerd/runc") / ns for ns in NAMESPACES)]
    if CGROUP_ROOT.is_dir():
        for controller in CGROUP_ROOT.iterdir():
            paths += [controller / ns for ns in NAMESPACES]
    return [p for p in paths if p.is_dir()]


def remove_leftovers(before: list[Path]) -> None:
    """Remove what ``leftovers`` finds now and did not before, deepest first, if empty."""
    for path in sorted(set(leftovers()) - set(before), key=lambda p: -len(p.parts)):
        try:
            path.rmdir()
        except OSError:
            pass
