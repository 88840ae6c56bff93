"""Where shard work runs: in this process (``local``) or across a Ray cluster (``ray``).

An index is shard-shaped (train once, build every shard on its own, search every shard
and merge), so an engine only decides *where* the same library functions run; it never
changes what they compute. Two kinds of work:

- **jobs** (:meth:`Engine.map_jobs`): independent calls ``fn(job, progress)`` on
  plain-data job descriptions, each within a memory bound, yielded as they finish. The
  build runs every shard this way;
- **holders** (:meth:`Engine.hold`): long-lived state (opened, memory-mapped shards)
  split into groups, one holder per node, and calls ``fn(state, *args)`` fanned out to
  every holder (a search's per-shard candidates and their exact re-rank, label
  candidates across an index). :class:`LocalEngine` has one holder: this process.

``local`` (the default) needs nothing beyond the core install; ``ray`` needs the
``ray`` extra (``pip install 'tessera-search[ray]'``), tessera-search installed on every
node, and the workspace at the same path on every node (a shared filesystem). See
``docs/scale.md``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["ENGINES", "Engine", "Holders", "LocalEngine", "elsewhere", "get_engine", "using_engine"]

ENGINES = ("local", "ray")


class Holders(abc.ABC):
    """State held by one process per node (see :meth:`Engine.hold`).

    ``groups[i]`` lists the positions (in the items given to ``hold``) that holder ``i``
    holds; ``nodes[i]`` names its node.
    """

    groups: list[list[int]]
    nodes: list[str]

    def call(self, fn: Callable[..., Any], *args) -> list:
        """``fn(state_i, *args)`` on every holder, in parallel; the results in holder order."""
        return self.call_each(fn, [args] * len(self.groups))

    @abc.abstractmethod
    def call_each(self, fn: Callable[..., Any], args: Sequence[tuple]) -> list:
        """``fn(state_i, *args[i])`` on every holder, in parallel; the results in holder order."""

    def close(self) -> None:
        """Release the held state."""

    def __enter__(self) -> Holders:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Engine(abc.ABC):
    """Runs shard jobs and holds shard state: the interface :class:`LocalEngine` (this
    process) and the Ray engine implement."""

    name = "local"

    @abc.abstractmethod
    def map_jobs(self, fn: Callable[[Any, Callable[[int], None] | None], Any], jobs: Sequence[Any], *,
                 memory: int | None = None, steps: Sequence[int] | None = None,
                 advance: Callable[[int], None] | None = None,
                 label: Callable[[Any], str] = lambda job: str(job)) -> Iterator[tuple[int, Any]]:
        """Run ``fn(job, progress)`` for every job; yield ``(position, result)`` as each finishes.

        ``memory``: bytes each job may use (a distributed engine reserves that much of a
        node for it, so a node never runs more jobs than fit). ``steps[i]``: the progress
        steps job ``i`` accounts for; ``advance(n)`` is called with them: step by step
        where the job runs here (``fn`` gets ``progress``), all at once when a job run
        elsewhere finishes. ``label(job)`` names a job in error messages. A failed job
        stops the work: jobs already running are let finish (and yielded), then the error
        is raised. Stopping the iteration early cancels what has not finished.
        """

    @abc.abstractmethod
    def hold(self, opener: Callable[[list], Any], items: Sequence[Any],
             weights: Sequence[int] | None = None) -> Holders:
        """Split ``items`` over one holder per node (balanced by ``weights``), each holding
        ``opener(its items)``; see :class:`Holders`."""

    def close(self) -> None:
        """Let go of what the engine started (a Ray runtime it started itself)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LocalHolders(Holders):
    def __init__(self, state, n_items: int) -> None:
        self.state = state
        self.groups = [list(range(n_items))]
        self.nodes = ["local"]

    def call_each(self, fn, args):
        (only,) = args
        return [fn(self.state, *only)]

    def close(self) -> None:
        close = getattr(self.state, "close", None)
        if close is not None:
            close()
        self.state = None


class LocalEngine(Engine):
    """Everything in this process, one job after another (the default)."""

    name = "local"

    def map_jobs(self, fn, jobs, *, memory=None, steps=None, advance=None, label=str):
        for i, job in enumerate(jobs):
            yield i, fn(job, advance)

    def hold(self, opener, items, weights=None):
        return _LocalHolders(opener(list(items)), len(items))


def get_engine(engine: str | Engine | None = None, address: str | None = None, **options) -> Engine:
    """The engine named ``engine`` (``"local"``, the default, or ``"ray"``), or ``engine`` itself.

    ``address``: the Ray cluster to join (``HOST:PORT`` of ``ray start --head``, or
    ``auto``); without one, a Ray runtime already initialised in this process is used,
    else Ray's own lookup (``RAY_ADDRESS``, a cluster started on this machine) or a new
    local one. ``options`` go to :class:`~tessera_search.engine._ray.RayEngine`
    (``max_retries``). InvalidInputError for an unknown name; MissingDependencyError when
    Ray is asked for and not installed.
    """
    from ..errors import InvalidInputError

    if isinstance(engine, Engine):
        if address is not None:
            raise InvalidInputError("give an address with engine='ray', not with an engine object")
        return engine
    name = (engine or "local").lower()
    if name == "local":
        if address is not None:
            raise InvalidInputError("--ray-address needs --engine ray")
        return LocalEngine()
    if name == "ray":
        from ._ray import RayEngine

        return RayEngine(address, **options)
    raise InvalidInputError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")


def elsewhere(engine) -> bool:
    """Whether ``engine`` (a name, an :class:`Engine` or None) runs work outside this process."""
    return (getattr(engine, "name", engine) or "local") != "local"


@contextlib.contextmanager
def using_engine(engine: str | Engine | None = None, address: str | None = None) -> Iterator[Engine]:
    """:func:`get_engine` for the duration of a ``with`` block: an engine made here from a
    name is closed on the way out; an :class:`Engine` passed in is the caller's to close."""
    if isinstance(engine, Engine):
        yield get_engine(engine, address)
        return
    made = get_engine(engine, address)
    try:
        yield made
    finally:
        made.close()
