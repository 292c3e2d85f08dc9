"""The command blocks of the README and the tutorials, run as a reader would run them.

The README's blocks are excerpts of the tutorials' (a test checks they are the same, so each
runs once).

Each page is one reader's session (a working directory of its own with the repository's
``configs/``, the shell environment carried from command to command, background terminals
started and stopped with Ctrl-C), against the real console script, the embedded broker and
Redis; what each command prints must have the shape the page shows (see
:mod:`tests.integration.doc_commands`). A page's command block that is not run says why
(``<!-- not tested: ... -->``), and a test keeps it that way.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.conftest import Backends, delete_pipelines
from tests.integration.doc_commands import (
    FENCE,
    MARKER,
    Block,
    PageRunner,
    parse_blocks,
    reader_environment,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TUTORIALS = sorted((REPO / "docs" / "tutorials").glob("*.md"))
README = REPO / "README.md"
PAGES = [README, *TUTORIALS]
NOT_TESTED = re.compile(r"^<!--\s*not tested:\s*\S.*-->\s*$")
COMMAND_FENCE = re.compile(r"^```(bash|console|sh|shell)\s*$")


def _label(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_every_command_block_is_run_or_says_why() -> None:
    unmarked = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        inside = False
        for i, line in enumerate(lines):
            if FENCE.match(line):
                if not inside and COMMAND_FENCE.match(line):
                    before = lines[i - 1] if i else ""
                    if not (MARKER.match(before) or NOT_TESTED.match(before)):
                        unmarked.append(f"{_label(page)}:{i + 1}")
                inside = not inside
    assert not unmarked, f"command blocks neither run nor saying why not: {unmarked}"


def test_readme_blocks_are_run_in_the_tutorials() -> None:
    """The README's command blocks are excerpts of the tutorials, so running those runs them."""
    run = {_block_text(b) for page in TUTORIALS for b in parse_blocks(page.read_text())}
    excerpts = parse_blocks(README.read_text(), "README.md")
    assert excerpts, "the README shows no tested command"
    differ = [b.where for b in excerpts if _block_text(b) not in run]
    assert not differ, f"README blocks that are not a tutorial's (run) block: {differ}"


def _block_text(block: Block) -> tuple[bool, tuple[tuple[str, tuple[str, ...] | None], ...]]:
    return block.background, tuple(
        (c.text, None if c.shown is None else tuple(c.shown)) for c in block.commands
    )


@pytest.mark.parametrize("page", [p for p in TUTORIALS if "<!-- test" in p.read_text()], ids=_label)
def test_page_commands(page: Path, backends: Backends, tmp_path: Path) -> None:
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = reader_environment()
    # Redis is the suite's; the broker is the one the page starts (`riverline demo` and
    # `riverline broker` do).
    env["RIVERLINE_REDIS_URL"] = backends.redis
    runner = PageRunner(tmp_path, env, suffix=f"-{uuid.uuid4().hex[:8]}")
    # A page that builds on a broker started in another page ("Scaling out") has the reader
    # paste that broker's export line: here, the suite's broker.
    runner.pasted["RIVERLINE_KAFKA_BOOTSTRAP"] = backends.kafka
    try:
        assert runner.run_page(page) > 0
    finally:
        delete_pipelines(backends, runner.names)
