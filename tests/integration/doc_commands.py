"""Run the command blocks of a Markdown page as its reader would, and check what they print.

A fenced block is run when the line before its opening fence is ``<!-- test -->`` (an HTML
comment: invisible on GitHub and in the docs site). ``<!-- test: background -->`` marks a
long-running command the reader starts in a terminal of its own (``riverline broker``,
``learner``, ``predictor``): it is started, the page goes on once its first shown output line
appeared, and it is stopped with SIGINT (the reader's Ctrl-C) when the page is done.

Inside a block, ``$ `` starts a command (``\\`` continues it on the next line; a ``<<'END'``
here-document runs to its ``END`` line); the lines after it, up to the next ``$ ``, are what
the page shows it printing (a leading ``^C`` is the terminal's echo of Ctrl-C). A block
without ``$ `` is a list of commands whose output is not shown, hence not checked. Commands
run one by one in ``bash``, in one working directory, with the environment carried from one to
the next (so ``export`` works as in a terminal).

What is checked is the *shape* of the output, not its numbers: the printed lines (stdout and
stderr as a terminal interleaves them) must match the shown ones, in order and completely,
where every number stands for any number, a run of spaces or of a table's horizontal rule for
any run, ``...`` inside a line for any text and a line ``...`` for any lines (none included).
So a page can show real output and still pass when timings, ports or dates differ, but not
when a line, a table or a column appears, disappears or changes its words.

Two departures from the reader, both for running beside other tests: a command given a
``--config FILE`` whose ``name`` is N runs with ``RIVERLINE_NAME=N<suffix>`` (the pipeline's
own topics and Redis keys), and its output has ``N<suffix>`` written back as ``N`` before it
is compared; and an ``export VAR=...`` of a variable a background command printed an
``export`` line for takes that printed value, as the reader pastes it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MARKER = re.compile(r"^<!--\s*test(?::\s*(?P<kind>background))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<end>\w+)\1")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# A random suffix such as a pipeline's "4aa41d": a word of 6 or more hex digits, one a digit.
HEX_WORD = r"(?<![0-9A-Za-z])(?=[0-9a-f]{6,}(?![0-9A-Za-z]))[0-9a-f]*\d[0-9a-f]*"
HEX = re.compile(HEX_WORD)
RULE = re.compile(r"[━─═]+")
SPACES = re.compile(r"[ \t]+")
EXPORT_LINE = re.compile(r"^export (?P<var>[A-Z_][A-Z0-9_]*)=(?P<value>\S+)$")


@dataclass
class Command:
    """One ``$`` command and the output lines the page shows (``None``: not shown)."""

    text: str
    shown: list[str] | None


@dataclass
class Block:
    """A marked fenced block of a page."""

    path: str
    line: int  # 1-based line of the opening fence
    background: bool
    commands: list[Command] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def parse_blocks(text: str, path: str = "<page>") -> list[Block]:
    """The marked blocks of a Markdown text, in page order.

    >>> page = "<!-- test -->\\n```console\\n$ echo a \\\\\\n  b\\na b\\n$ true\\n```\\n"
    >>> [(c.text, c.shown) for c in parse_blocks(page)[0].commands]
    [('echo a \\\\\\n  b', ['a b']), ('true', [])]
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if not marker or i + 1 >= len(lines) or not (fence := FENCE.match(lines[i + 1])):
            i += 1
            continue
        close = fence.group("fence")
        start = i + 2
        end = start
        while end < len(lines) and lines[end].strip() != close:
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{i + 2}: the marked block is never closed")
        block = Block(path, i + 2, marker.group("kind") == "background")
        block.commands = _commands(lines[start:end])
        if not block.commands:
            raise ValueError(f"{block.where}: a marked block without a command")
        blocks.append(block)
        i = end + 1
    return blocks


def _commands(body: list[str]) -> list[Command]:
    prompted = any(line.startswith("$ ") for line in body)
    commands: list[Command] = []
    i = 0
    while i < len(body):
        line = body[i]
        if prompted and not line.startswith("$ "):
            if not commands:
                raise ValueError(f"output before the first command: {line!r}")
            shown = commands[-1].shown
            assert shown is not None
            # "^C" is the terminal echoing the reader's Ctrl-C, not something the command printed.
            shown.append(line.removeprefix("^C"))
            i += 1
            continue
        if not prompted and (not line.strip() or line.lstrip().startswith("#")):
            i += 1
            continue
        text = [line[2:] if prompted else line]
        i += 1
        while text[-1].endswith("\\") and i < len(body):
            text.append(body[i])
            i += 1
        if heredoc := HEREDOC.search(text[-1]):
            while i < len(body) and body[i] != heredoc.group("end"):
                text.append(body[i])
                i += 1
            text.append(body[i] if i < len(body) else "")
            i += 1
        commands.append(Command("\n".join(text), [] if prompted else None))
    for command in commands:  # a block's trailing blank lines are layout, not output
        while command.shown and not command.shown[-1].strip():
            command.shown.pop()
    return commands


def line_pattern(shown: str) -> str:
    """The regular expression one shown line stands for.

    >>> bool(re.fullmatch(line_pattern("│ model │   721 │"), "│ model │    68 │"))
    True
    >>> bool(re.fullmatch(line_pattern("pipeline demo-2026-4aa41d:"), "pipeline demo-2027-b8a1c6:"))
    True
    >>> bool(re.fullmatch(line_pattern("published 801 events in 1.10s"), "published 9 events"))
    False
    >>> bool(re.fullmatch(line_pattern("... INFO x: ok ..."), "2026-12-07 12:00:01 INFO x: ok!"))
    True
    """
    parts = []
    literals = shown.rstrip().split("...")
    for index, literal in enumerate(literals):
        # The spaces next to a "..." belong to the elided text ("... INFO x" fits "12:00 INFO x").
        if index > 0:
            literal = literal.lstrip(" ")
        if index < len(literals) - 1:
            literal = literal.rstrip(" ")
        tokens = re.split(f"({HEX_WORD}|{NUMBER.pattern}|{RULE.pattern}|{SPACES.pattern})", literal)
        pattern = ""
        for token in tokens:
            if not token:
                continue
            if HEX.fullmatch(token) and not token.isdigit():
                pattern += "[0-9a-f]+"
            elif NUMBER.fullmatch(token):
                pattern += NUMBER.pattern
            elif RULE.fullmatch(token):
                pattern += RULE.pattern
            elif SPACES.fullmatch(token):
                pattern += SPACES.pattern
            else:
                pattern += re.escape(token)
        parts.append(pattern)
    return ".*".join(parts) + "[ \t]*"


def shape_mismatch(shown: list[str], printed: list[str]) -> str | None:
    """``None`` when the printed lines have the shape of the shown ones, else why not.

    >>> shape_mismatch(["a 1", "...", "c"], ["a 22", "b", "b", "c"]) is None
    True
    >>> print(shape_mismatch(["a 1", "c"], ["a 1", "b", "c"]))
    printed line 2 is not the shown line 2: shown 'c', printed 'b'
    """
    pattern = ""
    for line in shown:
        pattern += r"(?:[^\n]*\n)*?" if line.strip() == "..." else f"{line_pattern(line)}\n"
    text = "".join(f"{line.rstrip()}\n" for line in printed)
    if re.fullmatch(pattern, text):
        return None
    # Say where: the longest prefix of the shown lines that still matches.
    for n in range(len(shown), 0, -1):
        prefix = ""
        for line in shown[:n]:
            prefix += r"(?:[^\n]*\n)*?" if line.strip() == "..." else f"{line_pattern(line)}\n"
        if found := re.match(prefix, text):
            matched = found.group(0).count("\n")
            next_shown = shown[n] if n < len(shown) else "(the end)"
            next_printed = printed[matched] if matched < len(printed) else "(the end)"
            return (
                f"printed line {matched + 1} is not the shown line {n + 1}: "
                f"shown {next_shown!r}, printed {next_printed!r}"
            )
    return f"the first line differs: shown {shown[0]!r}, printed {printed[:1]!r}"


@dataclass
class _Background:
    block: Block
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None


class PageRunner:
    """Runs the marked blocks of pages in a working directory, as one reader's session."""

    def __init__(self, cwd: Path, env: dict[str, str], suffix: str, timeout: float = 300):
        self.cwd = cwd
        self.env = dict(env)
        self.suffix = suffix
        self.timeout = timeout
        self.pasted: dict[str, str] = {}  # VAR -> value a background command printed
        self.names: set[str] = set()  # pipelines the pages ran (with the suffix)
        self.background: list[_Background] = []

    # -- one command -------------------------------------------------------------------------

    def _prepare(self, text: str) -> tuple[str, dict[str, str], str | None]:
        for var, value in self.pasted.items():
            text = re.sub(rf"\b{var}=\S+", f"{var}={value}", text)
        env = dict(self.env)
        name = None
        found = re.search(r"--config[ =](\S+)", text)
        if found and (self.cwd / found.group(1)).is_file():
            loaded = yaml.safe_load((self.cwd / found.group(1)).read_text()) or {}
            if isinstance(loaded.get("name"), str):
                name = loaded["name"]
                env["RIVERLINE_NAME"] = f"{name}{self.suffix}"
                self.names.add(env["RIVERLINE_NAME"])
        return text, env, name

    def _printed(self, output: str, name: str | None) -> list[str]:
        output = ANSI.sub("", output)
        if name:
            output = output.replace(f"{name}{self.suffix}", name)
        return output.splitlines()

    def run_command(self, block: Block, command: Command) -> None:
        text, env, name = self._prepare(command.text)
        # The command, then the environment it leaves (NUL-separated), as a shell would keep it.
        env_file = self.cwd / ".doc-env"
        script = f"{text}\n__status=$?\nenv -0 > {env_file}\nexit $__status\n"
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=self.timeout,
        )
        printed = self._printed(proc.stdout, name)
        where = f"{block.where}: `{command.text.splitlines()[0]}`"
        assert "Traceback" not in proc.stdout, f"{where} printed a traceback:\n{proc.stdout}"
        assert proc.returncode == 0, f"{where} exited {proc.returncode}:\n{proc.stdout}"
        if env_file.exists():
            carried = dict(
                item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item
            )
            carried.pop("RIVERLINE_NAME", None)  # ours, per command, not the reader's
            self.env = {k: v for k, v in carried.items() if not k.startswith("BASH_FUNC_")}
            self.env.pop("__status", None)
        if command.shown is not None:
            mismatch = shape_mismatch(command.shown, printed)
            assert mismatch is None, f"{where}: {mismatch}\nprinted:\n" + "\n".join(printed)

    # -- background commands -----------------------------------------------------------------

    def start_background(self, block: Block) -> None:
        assert len(block.commands) == 1, f"{block.where}: one command per background block"
        command = block.commands[0]
        text, env, name = self._prepare(command.text)
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {text}"],
            cwd=self.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        job = _Background(block, proc)
        job.reader = threading.Thread(target=self._collect, args=(job,), daemon=True)
        job.reader.start()
        self.background.append(job)
        # Go on once the first shown line (other than "...") has been printed, as a reader would.
        first = next((s for s in command.shown or [] if s.strip() != "..."), None)
        if first is None:
            return
        pattern = re.compile(line_pattern(first))
        deadline = time.monotonic() + 120
        while not any(
            pattern.fullmatch(line) for line in self._printed("\n".join(job.lines), name)
        ):
            assert proc.poll() is None or job.reader.is_alive(), (
                f"{block.where}: `{text}` ended (status {proc.poll()}) before printing "
                f"{first!r}:\n" + "\n".join(job.lines)
            )
            assert time.monotonic() < deadline, f"{block.where}: no {first!r} from `{text}`"
            time.sleep(0.05)
        for line in list(job.lines):
            if exported := EXPORT_LINE.match(line.strip()):
                self.pasted[exported.group("var")] = exported.group("value")

    def _collect(self, job: _Background) -> None:
        assert job.proc.stdout is not None
        for line in job.proc.stdout:
            job.lines.append(ANSI.sub("", line.rstrip("\n")))

    def stop_background(self, check: bool = True) -> None:
        """Ctrl-C to every background command, last started first; then their output's shape."""
        problems = []
        for job in reversed(self.background):
            if job.proc.poll() is None:
                job.proc.send_signal(signal.SIGINT)
            try:
                job.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
                problems.append(f"{job.block.where}: did not stop on Ctrl-C")
            if job.reader is not None:
                job.reader.join(timeout=10)
            command = job.block.commands[0]
            output = "\n".join(job.lines)
            if "Traceback" in output:
                problems.append(f"{job.block.where}: printed a traceback:\n{output}")
            if command.shown is not None:
                _text, _env, name = self._prepare(command.text)
                mismatch = shape_mismatch(command.shown, self._printed(output, name))
                if mismatch:
                    problems.append(f"{job.block.where}: {mismatch}\nprinted:\n{output}")
        self.background = []
        if check:
            assert not problems, "\n".join(problems)

    # -- pages -------------------------------------------------------------------------------

    def run_page(self, path: Path) -> int:
        """Every marked block of the page in order; background commands stopped at the end."""
        blocks = parse_blocks(path.read_text(), str(path))
        try:
            for block in blocks:
                if block.background:
                    self.start_background(block)
                else:
                    for command in block.commands:
                        self.run_command(block, command)
        except BaseException:
            self.stop_background(check=False)
            raise
        self.stop_background()
        return len(blocks)


def reader_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """A terminal's environment: no RIVERLINE_* setting, unbuffered Python, a wide terminal."""
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("RIVERLINE_")}
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as on a terminal
    env["COLUMNS"] = "200"  # rich wraps at the terminal's width: the pages show unwrapped lines
    # The reader's activated venv: `riverline` is the console script next to this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
