"""Run the real ``riverline`` console script as a subprocess, with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import TEST_SECRET


def riverline_argv() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m pipeline.cli``."""
    script = Path(sys.executable).with_name("riverline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def cli_env(secret: str | None = TEST_SECRET, **extra: str) -> dict[str, str]:
    """The environment without any RIVERLINE_* setting, plus the secret (if any) and extras."""
    # COLUMNS/LINES left out too: pytest-xdist workers inherit COLUMNS=80, and a set COLUMNS
    # sets the width of riverline's tables even in a pipe (pipeline.cli.common.stdout_console),
    # so tests would see 80-column wrapping under -n but not under -n 0.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RIVERLINE_") and k not in ("COLUMNS", "LINES")
    }
    if secret is not None:
        env["RIVERLINE_CHECKPOINT_SECRET"] = secret
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str], cwd: Any = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*riverline_argv(), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def riverline(
    args: list[str], env: dict[str, str], timeout: float = 120, cwd: Any = None
) -> subprocess.CompletedProcess[str]:
    """``riverline ARGS``; waits for it and returns exit status, stdout and stderr."""
    return finish(start(args, env, cwd), timeout)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish in {timeout}s:\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def riverline_all(
    commands: list[list[str]], env: dict[str, str], timeout: float = 120
) -> list[subprocess.CompletedProcess[str]]:
    """Several commands at once (each is mostly start-up time), results in the same order."""
    procs = [start(args, env) for args in commands]
    return [finish(proc, timeout) for proc in procs]


def assert_one_error(result: subprocess.CompletedProcess[str], status: int, *names: str) -> str:
    """Exit status as documented, no traceback, and an ``error:`` line naming what failed."""
    output = result.stdout + result.stderr
    assert result.returncode == status, (result.args, result.returncode, output)
    assert "Traceback" not in output, output
    lines = result.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(starts) == 1, result.stderr
    # A config error lists its fields on indented lines below "error: invalid configuration:".
    message = [lines[starts[0]]]
    message += [line for line in lines[starts[0] + 1 :] if line.startswith("  ")]
    text = "\n".join(message)
    for name in names:
        assert name in text, (name, text)
    return text
