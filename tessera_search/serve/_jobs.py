"""Long work for the web app (labelling, suggestions, exports): run in the background,
report progress, cancel on request.

A job runs one library call in a worker thread (one at a time: the machine's cores go to
the call itself). Its ``progress`` is the library's callback (:mod:`tessera_search._progress`):
each ``advance`` updates the job's counters and, once the job is cancelled, raises
:class:`JobCancelled`, which unwinds the library call the way any error does (files being
written are removed; nothing half-written is left). Library warnings during the call are
kept with the job.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

__all__ = ["Job", "JobCancelled", "Jobs"]

_KEEP = 100  # finished jobs remembered


class JobCancelled(Exception):
    """Raised inside a job's progress callback once the job is cancelled."""


@dataclass
class Job:
    """One background call: ``state`` is queued, running, done, error or cancelled."""

    id: int
    kind: str
    state: str = "queued"
    stage: str = ""
    done: int = 0
    total: int | None = None
    result: dict | None = None
    error: dict | None = None
    warnings: list[str] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False

    def to_json(self) -> dict:
        seconds = None
        if self.started is not None:
            seconds = round((self.finished or time.perf_counter()) - self.started, 3)
        return {"id": self.id, "kind": self.kind, "state": self.state, "stage": self.stage, "done": self.done,
                "total": self.total, "seconds": seconds, "warnings": list(self.warnings),
                "result": self.result, "error": self.error}

    # the library's progress protocol: progress(label, total) -> context yielding advance(n)
    @contextlib.contextmanager
    def progress(self, label: str, total: int | None):
        self.check()
        self.stage, self.done, self.total = str(label), 0, total

        def advance(n: int = 1) -> None:
            self.done += int(n)
            self.check()

        yield advance

    def on_progress(self, done: int, total: int) -> None:
        """The ``on_progress(done, total)`` form of the same."""
        self.done, self.total = int(done), int(total)
        self.check()

    def check(self) -> None:
        if self.cancel_requested:
            raise JobCancelled(f"job {self.id} was cancelled")


class Jobs:
    """The app's jobs: :meth:`submit` a call, read them by id, :meth:`cancel` one."""

    def __init__(self, error_doc) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-job")
        self._jobs: OrderedDict[int, Job] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._error_doc = error_doc  # exception -> {"error": Name, "message": ...}

    def submit(self, kind: str, fn) -> Job:
        """Run ``fn(job) -> dict`` in the background; returns the queued job."""
        with self._lock:
            job = Job(next(self._ids), kind)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state in ("done", "error", "cancelled")]
            for old in finished[:max(0, len(self._jobs) - _KEEP)]:
                self._jobs.pop(old.id, None)
        self._pool.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn) -> None:
        if job.cancel_requested:
            job.state = "cancelled"
            return
        job.state, job.started = "running", time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = fn(job)
            job.warnings.extend(str(w.message) for w in caught)
            job.result, job.state = result, "done"
        except JobCancelled:
            job.state = "cancelled"
        except Exception as exc:  # reported to the client as our error name and message
            job.error, job.state = self._error_doc(exc), "error"
        finally:
            job.finished = time.perf_counter()

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(int(job_id))

    def cancel(self, job_id: int) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            job.cancel_requested = True
            if job.state == "queued":
                job.state = "cancelled"
        return job

    def list(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def close(self) -> None:
        for job in self.list():
            job.cancel_requested = True
        self._pool.shutdown(wait=True, cancel_futures=True)
