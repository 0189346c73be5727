"""The erofsd command line: a thin client of the library.

Every command turns a user mistake into one line on stderr and a non-zero
exit (``ErofsdError`` and ``OSError`` are caught at one boundary, in
``_Group.invoke``); a traceback means a bug in erofsd.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from .. import __version__
from ..errors import ErofsdError

EXIT_ERROR = 1
# Where each command is defined: a command's module (and what it imports) is
# loaded only when that command runs, so `erofsd build` does not pay for grpc.
COMMAND_MODULES = {
    "build": "build", "cache": "cache", "convert": "convert", "index": "index",
    "pull": "transfer",
    "push": "transfer", "containerd": "containerd", "snapshotter": "containerd",
    **dict.fromkeys(("daemon", "mount", "umount", "status", "metrics", "stop"), "daemon"),
    **dict.fromkeys(("inspect", "ls", "cat", "extract", "export", "check"), "read"),
}


class _Group(click.Group):
    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            importlib.import_module(f"{__name__}.{COMMAND_MODULES[name]}")
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in sorted(set(COMMAND_MODULES.values())):
            importlib.import_module(f"{__name__}.{module}")
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ErofsdError as e:
            fail(str(e))
        except BrokenPipeError:
            sys.stderr.close()  # a reader like `head` went away: not an error
            sys.exit(0)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e}")
        except KeyboardInterrupt:
            fail("interrupted", code=130)


def fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"erofsd: error: {message}", err=True)
    sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="erofsd")
@click.option("--verbose", "-v", count=True, help="Log what happens (repeat for more).")
def cli(verbose: int) -> None:
    """erofsd: lazy-loading EROFS container images with shared cache domains.

    IMAGE is oci:DIR[:TAG] (an OCI image layout; the tag defaults to
    latest), docker://HOST/REPO:TAG (a registry, read lazily through the
    cache), or a raw EROFS bootstrap file plus --device FILE for each blob.
    """
    level = {0: logging.ERROR, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="erofsd: %(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="erofsd", auto_envvar_prefix=None)
