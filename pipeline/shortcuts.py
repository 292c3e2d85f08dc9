"""Private-API shortcuts: each one pinned to the library versions it was checked against.

A shortcut reads or writes a library's internals because the public API costs measurably more
end to end (``benchmarks/shortcuts.py`` measures each against its public path; one that pays
less than 5% goes back to the public API). A library release may change those internals
without notice, so a shortcut runs only on a version listed in :data:`CHECKED` and when its
own look at the internals finds what it needs; otherwise the public path runs, and one log
line says so. Either way the outputs are the same: only the speed differs.

>>> allowed("kafka-python.fetch", version=lambda library: "0.0.1")
False
>>> allowed("no.such.shortcut")
False
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Per shortcut: the distribution whose internals it uses, and the versions it was checked
#: against (by its tests, which compare it with the public path, and by the benchmark).
CHECKED: dict[str, tuple[str, frozenset[str]]] = {
    # KafkaConsumer's fetcher yields riverline's Record, read from the v2 batch's buffer.
    "kafka-python.fetch": ("kafka-python", frozenset({"3.0.12"})),
    # Small keyed records go to the producer's accumulator without KafkaProducer.send's checks.
    "kafka-python.append": ("kafka-python", frozenset({"3.0.12"})),
    # An open batch's records appended to directly, the batch's future standing for them.
    "kafka-python.open-batch": ("kafka-python", frozenset({"3.0.12"})),
}

#: Shortcuts forced onto the public path (the benchmark's A/B runs; tests).
public_only: set[str] = set()

_reported: set[str] = set()


@functools.cache
def installed_version(library: str) -> str | None:
    """The installed version of distribution ``library``, or None when it is not installed."""
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return None


def allowed(
    name: str,
    internals: Callable[[], bool] | None = None,
    version: Callable[[str], str | None] | None = None,
) -> bool:
    """Whether shortcut ``name`` may run: not forced public, the installed library a version it
    was checked against, and ``internals()`` (the shortcut's look at what it reads) true.

    The first time a shortcut is refused for its version or its internals, one warning says so.
    """
    if name in public_only:
        return False
    entry = CHECKED.get(name)
    if entry is None:
        return False
    library, checked = entry
    found = (version or installed_version)(library)
    if found not in checked:
        _report(
            name,
            f"{library} {found} is not a version it was checked against "
            f"({', '.join(sorted(checked))})",
        )
        return False
    try:
        ok = internals is None or bool(internals())
    except Exception as e:  # a changed internal may fail in any way
        ok = False
        _report(name, f"looking at {library}'s internals raised {type(e).__name__}: {e}")
    else:
        if not ok:
            _report(name, f"{library} {found}'s internals are not what it was checked against")
    return ok


def _report(name: str, why: str) -> None:
    if name not in _reported:
        _reported.add(name)
        log.warning("shortcut %s is off, the public API runs instead: %s", name, why)
