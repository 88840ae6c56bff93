"""The Ray engine: shard jobs as Ray tasks, shard state in one Ray actor per node.

Ray does the scheduling, the transport and the retries; this module only maps the
engine's two kinds of work onto it (see :mod:`tessera_search.engine`):

- a job is a task reserving one CPU and ``memory`` bytes of the node's Ray ``memory``
  resource, so a node runs at most as many jobs at once as its memory (and CPUs) allow.
  Tasks lost with their node (or worker) are retried by Ray (``max_retries``) on a node
  that fits; a job that raises is not retried. A small tracker actor beside the driver
  records where each job started, so a failure names its node whatever killed it. When
  no live node can run the remaining jobs (the only big enough node was lost), the work
  stops with an error instead of waiting for ever;
- holders are actors pinned one per live node (``NodeAffinitySchedulingStrategy``),
  each given a balanced share of the items (by weight) to open; they reserve no CPU (a
  search is short and must not queue behind build tasks) and search with all the
  node's CPUs.

Ray is imported here only, so ``--engine local`` never needs it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from ..errors import EngineError, MissingDependencyError
from . import Engine, Holders

__all__ = ["RayEngine"]


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            "the ray engine needs Ray: run `pip install 'tessera-search[ray]'` (or `pip install ray`) on every node"
        ) from exc
    return ray


def _here() -> dict:
    """This process's node: {"node_id", "ip"}."""
    ray = _ray()
    return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}


class _Tracker:
    """Where each job started (an actor beside the driver)."""

    def __init__(self) -> None:
        self.started: dict[int, dict] = {}

    def start(self, i: int, node: dict) -> None:
        self.started[int(i)] = node

    def where(self) -> dict[int, dict]:
        return dict(self.started)


def _run_job(fn, job, i: int, tracker):
    """A job on some node: say where it runs, then run it (no progress callback)."""
    ray = _ray()
    ray.get(tracker.start.remote(i, _here()))
    return fn(job, None)


class _Holder:
    """State for one node's share of the items: ``opener(items)``, then calls on it."""

    def __init__(self, opener, items: list, threads: int) -> None:
        self.state = opener(items)
        # Ray pins OMP_NUM_THREADS=1 in a worker that reserved no CPU; searches of the
        # held state may use the node's CPUs (OpenMP is loaded by now, by the opener).
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=max(1, int(threads)), user_api="openmp")

    def node(self) -> dict:
        return _here()

    def call(self, fn, *args):
        return fn(self.state, *args)

    def close(self) -> None:
        close = getattr(self.state, "close", None)
        if close is not None:
            close()
        self.state = None


def _balance(weights: Sequence[int], n_groups: int) -> list[list[int]]:
    """Positions split into ``n_groups`` contiguous runs of about equal total weight."""
    w = [max(0, int(x)) for x in weights]
    if sum(w) == 0:
        w = [1] * len(w)
    total = sum(w) or 1
    groups: list[list[int]] = [[] for _ in range(n_groups)]
    acc = 0
    for j, x in enumerate(w):
        groups[min(n_groups - 1, int((acc + x / 2) * n_groups / total))].append(j)
        acc += x
    return groups


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _reachable(address: str | None, timeout: float = 5.0) -> None:
    """EngineError at once when a HOST:PORT address does not answer (Ray itself retries
    for minutes before giving up)."""
    import socket

    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"no Ray cluster answers at {address} ({exc}); start one with `ray start --head` on that machine, "
            "or give the address it printed (--ray-address HOST:PORT)"
        ) from None


class _RayHolders(Holders):
    def __init__(self, engine: RayEngine, actors: list, groups: list[list[int]], nodes: list[str]) -> None:
        self._engine = engine
        self._actors = actors
        self.groups = groups
        self.nodes = nodes

    def call_each(self, fn, args):
        ray = _ray()
        refs = [a.call.remote(fn, *a_args) for a, a_args in zip(self._actors, args)]
        out = []
        for ref, node in zip(refs, self.nodes):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None) or exc
                raise EngineError(
                    f"the shard holder on node {node} failed: {type(cause).__name__}: {_short(cause)}",
                    details={"node": node, "error": type(cause).__name__, "message": str(cause)},
                ) from cause
        return out

    def close(self) -> None:
        ray = _ray()
        if not self._actors or not ray.is_initialized():
            return
        for a in self._actors:
            try:
                ray.get(a.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a holder already gone has nothing left to close
                pass
            ray.kill(a)
        self._actors = []


class RayEngine(Engine):
    """Shard jobs and holders on a Ray cluster (see the module docstring).

    ``address``: the cluster (``HOST:PORT`` of ``ray start --head``, ``auto``); None uses
    the Ray runtime already initialised in this process, else Ray's own lookup or a new
    local runtime. ``max_retries``: Ray's retries of a job whose worker or node was lost.
    A runtime this engine started is shut down by :meth:`close`.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, max_retries: int = 3, poll_seconds: float = 1.0) -> None:
        ray = _ray()
        self.max_retries = int(max_retries)
        self.placements: dict[str, str] = {}  # the last map_jobs: job label -> node ID it (last) started on
        self.poll_seconds = float(poll_seconds)
        self._owned = False
        if not ray.is_initialized():
            _reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {address}" if address else "(none given: set --ray-address or RAY_ADDRESS)"
                raise EngineError(
                    f"cannot join the Ray cluster {where}: {_short(exc)}; start one with `ray start --head` "
                    "and pass its address"
                ) from exc
            self._owned = True
        self.address = address

    # -- cluster facts ----------------------------------------------------------------

    def nodes(self) -> list[dict]:
        """The live nodes: {"node_id", "ip", "resources"}, in a stable order."""
        ray = _ray()
        out = [{"node_id": n["NodeID"], "ip": n.get("NodeManagerAddress", "?"), "resources": dict(n.get("Resources") or {})}
               for n in ray.nodes() if n.get("Alive")]
        return sorted(out, key=lambda n: (n["ip"], n["node_id"]))

    def _fitting(self, memory: int) -> list[dict]:
        return [n for n in self.nodes()
                if n["resources"].get("CPU", 0) >= 1 and n["resources"].get("memory", 0) >= memory]

    # -- jobs -------------------------------------------------------------------------

    def map_jobs(self, fn, jobs, *, memory=None, steps=None, advance=None, label=str):
        ray = _ray()
        jobs = list(jobs)
        if not jobs:
            return
        memory = int(memory or 0)
        if not self._fitting(memory):
            raise EngineError(self._no_node(memory, [label(j) for j in jobs]))
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        tracker = ray.remote(_Tracker).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(_here()["node_id"], soft=True)).remote()
        task = ray.remote(_run_job).options(num_cpus=1, memory=memory or None, max_retries=self.max_retries,
                                            retry_exceptions=False)
        pending = {task.remote(fn, job, i, tracker): i for i, job in enumerate(jobs)}
        failure: EngineError | None = None
        cause: BaseException | None = None
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_seconds)
                if not ready:
                    if failure is None and not self._fitting(memory):
                        failure = EngineError(self._no_node(memory, [label(jobs[i]) for i in sorted(pending.values())]))
                        for ref in pending:
                            ray.cancel(ref)
                        pending.clear()
                    continue
                ref = ready[0]
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    continue
                except ray.exceptions.RayError as exc:
                    if failure is None:
                        failure, cause = self._failed(exc, jobs[i], i, label, tracker)
                        self._cancel_unstarted(pending, tracker)
                    continue
                if advance is not None and steps is not None:
                    advance(int(steps[i]))
                yield i, result
            if failure is not None:
                raise failure from cause
        finally:
            for ref in pending:  # the caller stopped early: nothing more is wanted
                ray.cancel(ref)
            try:
                where = ray.get(tracker.where.remote(), timeout=10)
            except ray.exceptions.RayError:
                where = {}
            self.placements = {label(jobs[i]): w["node_id"] for i, w in sorted(where.items())}
            ray.kill(tracker)

    def _failed(self, exc, job, i: int, label, tracker) -> tuple[EngineError, BaseException]:
        ray = _ray()
        cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
        cause = cause if isinstance(cause, BaseException) else exc
        node = getattr(exc, "ip", None) if cause is not exc else None
        if node is None:
            try:
                where = ray.get(tracker.where.remote(), timeout=10).get(i)
            except ray.exceptions.RayError:
                where = None
            node = f"{where['ip']} ({where['node_id'][:12]})" if where else "unknown (it never started)"
        name = label(job)
        return EngineError(
            f"{name} failed on node {node}: {type(cause).__name__}: {_short(cause)}; rerun the same command "
            "to finish (finished shards are kept)",
            details={"job": name, "node": node, "error": type(cause).__name__, "message": str(cause)},
        ), cause

    def _cancel_unstarted(self, pending: dict, tracker) -> None:
        """After a failure: cancel the jobs not yet started; those running may finish."""
        ray = _ray()
        try:
            started = set(ray.get(tracker.where.remote(), timeout=10))
        except ray.exceptions.RayError:
            started = set()
        for ref, i in list(pending.items()):
            if i not in started:
                ray.cancel(ref)

    def _no_node(self, memory: int, names: list[str]) -> str:
        sizes = ", ".join(f"{n['ip']}: {n['resources'].get('CPU', 0):g} CPU, {n['resources'].get('memory', 0) / 2**30:.2f} GiB"
                          for n in self.nodes()) or "none"
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        return (f"no live node of the Ray cluster can run {shown}: each needs 1 CPU and {memory / 2**30:.2f} GiB of "
                f"Ray memory (live nodes: {sizes}); add a node (`ray start --address ...`) or lower --max-memory, "
                "then rerun (finished shards are kept)")

    # -- holders ----------------------------------------------------------------------

    def hold(self, opener, items, weights=None):
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        items = list(items)
        nodes = self.nodes()
        if not nodes:
            raise EngineError("the Ray cluster has no live node")
        weights = list(weights) if weights is not None else [1] * len(items)
        groups = _balance(weights, min(len(nodes), max(1, len(items))))
        holder = ray.remote(_Holder)
        actors, kept, names = [], [], []
        for node, group in zip(nodes, groups):
            if not group:
                continue
            threads = max(1, int(node["resources"].get("CPU", 1)))
            actors.append(holder.options(
                num_cpus=0, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["node_id"], soft=False),
            ).remote(opener, [items[j] for j in group], threads))
            kept.append(group)
            names.append(f"{node['ip']} ({node['node_id'][:12]})")
        out = _RayHolders(self, actors, kept, names)
        try:
            out.call(_node_of)  # wait until every holder has opened its share
        except BaseException:
            out.close()
            raise
        return out

    def close(self) -> None:
        ray = _ray()
        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = False


def _node_of(state) -> int:
    return os.getpid()


def wait_for_nodes(n: int, timeout: float = 60.0) -> None:
    """Block until the cluster has ``n`` live nodes (for scripts that start nodes)."""
    ray = _ray()
    t0 = time.monotonic()
    while sum(1 for x in ray.nodes() if x.get("Alive")) < n:
        if time.monotonic() - t0 > timeout:
            raise EngineError(f"the Ray cluster did not reach {n} live nodes in {timeout:g} s")
        time.sleep(0.2)

