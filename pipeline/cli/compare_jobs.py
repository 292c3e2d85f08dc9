"""`riverline compare`'s runs, spread over worker processes.

With one job everything runs here: the source is read, merged and parsed once for every config
that shares a history (:func:`pipeline.compare.simulate_many`), and each core fed in turn.

With more, ``min(jobs, configs)`` forked workers each run their share of the configs (every
``workers``-th, in the order given). When that leaves a core idle (fewer configs than jobs:
one config on two cores), a process of its own reads the history (the source, the replay's
schedule and encoding, the consumer's parsing and merge: about what a light core costs) and
sends the merged records, a stretch at a time, to the workers, which then pay only unpacking
them (~1.3 us per record, against ~10 to read and parse it). Otherwise each worker reads the
history itself, once for its share. Processes are forked, so they start with the parent's
imports and cores; the reports (a few kB each) come back. Where the platform cannot fork,
everything runs here.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from consumers.gc_policy import OLDER_THRESHOLDS, YOUNG_THRESHOLD

if TYPE_CHECKING:
    from pipeline.compare_order import Item
    from pipeline.config import RiverlineConfig
    from producers.reviewer import ReviewerSpec
    from producers.schedule import LabelDelay
    from producers.sources import SourceOptions

# What the reader sends a worker, by first byte: a stretch of records, the end of a group of
# configs' history (the reader's CPU seconds for it), or what stopped the reader; and a worker
# the parent: its reports, or what stopped it.
_CHUNK, _END, _ERROR, _REPORTS = b"c", b"e", b"x", b"r"


@contextmanager
def streaming_gc() -> Iterator[None]:
    """The collector as ``run``'s consumer has it during the runs (what is alive frozen, young
    objects collected every 10,000 allocations; so the core costs here what it costs there),
    then as before.

    Unlike the consumer's :func:`~consumers.gc_policy.tune_for_streaming`, no collection first:
    over the ~120k objects River and pydantic leave, it takes ~40 ms, a fifth of a comparison
    of 5,000 events. What start-up left to collect is frozen with the rest, and freed later.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class _Plan:
    """The configs, their cores, the groups that share a history (the same partitions,
    validation and label type: each group's history is read once) and the simulated
    reviewer's answers (None without one)."""

    def __init__(
        self,
        configs: Sequence[RiverlineConfig],
        source: str,
        delay: LabelDelay | None,
        options: SourceOptions,
        reviewer: ReviewerSpec | None,
    ) -> None:
        from pipeline.compare_order import history_key
        from pipeline.core import LearningCore
        from producers.reviewer import SimulatedAnswers
        from producers.sources import open_source

        self.configs = list(configs)
        self.source, self.delay, self.options = source, delay, options
        self.cores = [LearningCore.from_config(config) for config in configs]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, (config, core) in enumerate(zip(configs, self.cores, strict=True)):
            groups.setdefault(history_key(config, not core.classifier), []).append(i)
        self.groups = list(groups.values())
        self.answer = None
        if reviewer is not None:
            # It knows every record's label, by id, and keeps no state between answers, so
            # one serves every config (and every worker: forked, it is not read again).
            truth = {r.id: r.label for r in open_source(source, options)}
            self.answer = SimulatedAnswers(reviewer, truth).answer

    def chunks(self, group: list[int]) -> Iterator[list[Item]]:
        """The merged records of one group's history, read in this process."""
        from pipeline.compare import merged_chunks
        from pipeline.validation import Validator
        from producers.sources import open_source

        config, core = self.configs[group[0]], self.cores[group[0]]
        validator = Validator(config.validation, regression=not core.classifier)
        records = open_source(self.source, self.options)
        return merged_chunks(config, records, self.delay, validator, self.options.interval)

    def run(self, members: Sequence[int], chunks: Iterable[list[Item]]) -> list[dict[str, Any]]:
        """The reports of ``members`` (configs of one group) fed ``chunks``."""
        from pipeline.compare import simulate_many

        return simulate_many(
            [self.configs[i] for i in members],
            (),
            self.delay,
            answer=self.answer,
            interval=self.options.interval,
            cores=[self.cores[i] for i in members],
            chunks=chunks,
        )


def forks() -> bool:
    """Whether this platform can fork (workers start with this process's imports and cores)."""
    return "fork" in multiprocessing.get_all_start_methods()


def reads_apart(jobs: int, configs: int) -> bool:
    """Whether a process of its own reads the history for the workers: when they leave a core
    idle (fewer configs than jobs) and the platform can fork.

    >>> reads_apart(2, 1) == forks(), reads_apart(2, 2), reads_apart(1, 1)
    (True, False, False)
    """
    return 1 <= configs < jobs and forks()


def run_all(
    configs: Sequence[RiverlineConfig],
    source: str,
    delay: LabelDelay | None,
    options: SourceOptions,
    reviewer: ReviewerSpec | None,
    jobs: int,
) -> list[dict[str, Any]]:
    """Every config's report, in the order given: with ``jobs`` 1 all in this process, with
    more over ``min(jobs, len(configs))`` workers, and a process reading the history for them
    when that leaves a core idle (:func:`reads_apart`)."""
    plan = _Plan(configs, source, delay, options, reviewer)
    # Frozen before forking: a child's collections then leave the parent's objects alone,
    # rather than touching (and so copying) every page of them.
    with streaming_gc():
        if jobs > 1 and configs and forks():
            # A core the workers leave idle reads the history for them; with none to spare, a
            # reader would only add its packing and their unpacking (measured: 15-20% slower
            # over 4 configs on 2 cores), so each worker reads for itself.
            return _forked(plan, min(jobs, len(configs)), reader=reads_apart(jobs, len(configs)))
        return _run_share(plan, list(range(len(configs))), None)


def _forked(plan: _Plan, workers: int, reader: bool) -> list[dict[str, Any]]:
    """The reports of ``workers`` forked workers, each with its share of the configs, fed by
    a ``reader`` process of their own or each reading the history itself."""
    context = multiprocessing.get_context("fork")
    shares = [list(range(len(plan.configs)))[k::workers] for k in range(workers)]
    # reader -> worker k, if there is a reader; worker k -> here
    records = [context.Pipe(duplex=False) for _ in range(workers)] if reader else []
    for _, send in records:
        _widen(send)
    results = [context.Pipe(duplex=False) for _ in range(workers)]
    ends = [end for pipe in records + results for end in pipe]
    children = []
    for k in range(workers):
        receive = records[k][0] if reader else None
        children.append(
            context.Process(
                target=_work, args=(plan, shares[k], receive, results[k][1], ends), daemon=True
            )
        )
    if reader:
        sends = [send for _, send in records]
        children.append(
            context.Process(target=_read, args=(plan, shares, sends, ends), daemon=True)
        )
    for child in children:
        child.start()
    _only([receive for receive, _ in results], ends)  # the children hold the rest
    try:
        reports: list[dict[str, Any]] = [{} for _ in plan.configs]
        pending = {results[k][0]: k for k in range(workers)}
        while pending:
            for ready in wait(list(pending)):
                assert isinstance(ready, Connection)
                k = pending.pop(ready)
                try:
                    data = ready.recv_bytes()
                except EOFError:
                    child = children[k]
                    child.join(1)
                    raise RuntimeError(
                        f"compare worker {k + 1} of {workers} stopped (exit code {child.exitcode})"
                    ) from None
                if data[:1] == _ERROR:
                    raise pickle.loads(data[1:])
                for i, report in zip(shares[k], pickle.loads(data[1:]), strict=True):
                    reports[i] = report
        return reports
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
        for receive, _ in results:
            receive.close()


def _widen(end: Connection) -> None:
    """Let the pipe hold a megabyte (about 20 stretches of records) where Linux allows it,
    rather than 64 kB (one): the reader and a worker take about as long per record, and with
    one stretch of slack each waits whenever the other hiccups."""
    try:
        import fcntl

        fcntl.fcntl(end.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass  # another platform, or a lower limit: a narrower pipe only waits more


def _only(keep: Sequence[Connection], ends: Sequence[Connection]) -> None:
    """Close the pipe ends this process has but does not use (a child inherits them all), so
    that each pipe has one process at either end and a reader sees EOF when its writer is
    gone."""
    for end in ends:
        if not any(end is kept for kept in keep):
            end.close()


def _pickled_error(error: BaseException, where: str) -> bytes:
    """``error`` pickled, to be raised in another process; one that cannot be is sent as a
    RuntimeError that says what it was."""
    try:
        return pickle.dumps(error)
    except Exception:
        return pickle.dumps(RuntimeError(f"{where}: {error!r}"))


def _read(
    plan: _Plan, shares: list[list[int]], sends: list[Connection], ends: list[Connection]
) -> None:
    """The reader's process: each group's history, merged, to the workers with configs in it."""
    from pipeline.compare_order import pack_items

    _only(sends, ends)
    try:
        for group in plan.groups:
            to = [
                send for share, send in zip(shares, sends, strict=True) if set(share) & set(group)
            ]
            cpu = time.process_time()
            for chunk in plan.chunks(group):
                data = _CHUNK + pack_items(chunk)
                for send in to:
                    send.send_bytes(data)
            # Its CPU, for each config to take its share of (the workers add their unpacking).
            end = _END + pickle.dumps((time.process_time() - cpu) / len(group))
            for send in to:
                send.send_bytes(end)
    except BaseException as e:  # told to the workers, who raise it where the runs are
        error = _ERROR + _pickled_error(e, "reading the history")
        for send in sends:
            with suppress(OSError):  # a worker that has gone: the parent hears of it
                send.send_bytes(error)


class _Received:
    """A group's merged records as a worker receives them; ``cpu`` is then the reader's CPU
    seconds per config for it."""

    def __init__(self, receive: Connection) -> None:
        self.receive = receive
        self.cpu = 0.0

    def __iter__(self) -> Iterator[list[Item]]:
        from pipeline.compare_order import unpack_items

        while True:
            try:
                data = self.receive.recv_bytes()
            except EOFError:
                raise RuntimeError("the process reading the history stopped") from None
            head, body = data[:1], memoryview(data)[1:]
            if head == _CHUNK:
                yield unpack_items(body)
            elif head == _END:
                self.cpu = pickle.loads(body)
                return
            else:
                raise pickle.loads(body)


def _run_share(plan: _Plan, share: list[int], receive: Connection | None) -> list[dict[str, Any]]:
    """The reports of the configs in ``share``, in its order, group by group: over the
    records received from the reader (each run then charged its share of the reader's CPU),
    or, with ``receive`` None, read in this process."""
    from pipeline.compare import charge

    reports: dict[int, dict[str, Any]] = {}
    for group in plan.groups:
        members = [i for i in group if i in share]
        if not members:
            continue
        received = None if receive is None else _Received(receive)
        chunks = plan.chunks(group) if received is None else received
        # run() reads the records to the end before it reports: received.cpu is known then.
        for i, report in zip(members, plan.run(members, chunks), strict=True):
            if received is not None:
                charge(report, received.cpu)
            reports[i] = report
    return [reports[i] for i in share]


def _work(
    plan: _Plan,
    share: list[int],
    receive: Connection | None,
    result: Connection,
    ends: list[Connection],
) -> None:
    """A worker's process: its share of each group's configs, over the records received
    from the reader (or, with ``receive`` None, read here)."""
    _only([result] if receive is None else [receive, result], ends)
    try:
        result.send_bytes(_REPORTS + pickle.dumps(_run_share(plan, share, receive)))
    except BaseException as e:
        result.send_bytes(_ERROR + _pickled_error(e, "compare worker"))
