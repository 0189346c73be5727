"""Running the erofsd command line as a user does: a real subprocess, its exit code."""

from __future__ import annotations

import subprocess
import sys


def erofsd(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "erofsd", *map(str, args)],
                          capture_output=True, input=input, timeout=300)


def ok(*args: str) -> bytes:
    result = erofsd(*args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("erofsd: error:", "Usage:", "Error:")) \
        or lines[-1].startswith("Error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err
