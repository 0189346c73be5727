"""Commands load their module only when they run; the map of which module says so is complete."""

from __future__ import annotations

import importlib
import subprocess
import sys

from erofsd.cli import COMMAND_MODULES, cli


def test_every_command_is_in_the_map_and_the_map_names_its_module():
    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"erofsd.cli.{module}")
    assert sorted(cli.commands) == sorted(COMMAND_MODULES)
    for name, command in cli.commands.items():
        assert command.callback.__module__ == f"erofsd.cli.{COMMAND_MODULES[name]}", name


def test_a_command_runs_without_the_modules_of_the_others():
    probe = ("import sys; from erofsd.cli import main; sys.argv = ['erofsd', 'build', '--help']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules\n"
             "             if m.startswith(('grpc', 'trio', 'erofsd.cli.'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "['erofsd.cli.build', 'erofsd.cli.options']"
