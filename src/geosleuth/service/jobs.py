"""Running photos through the (synchronous) Locator for the service: a bounded pool for single
requests, and a runner that works through the stored job items.

:class:`BoundedPool` runs calls in worker threads and refuses (:class:`ServiceBusyError`) when
``queue_size`` calls are already waiting or running, so a burst costs a 503, never unbounded memory.

:class:`JobRunner` keeps no queue in memory: the items wait in the database. Its thread claims
pending items while it has a free worker, locates each, and records the one result. Stopping lets
in-flight images finish (``wait``); ``wait=False`` abandons them ``running``, as a killed process
would. :meth:`JobRunner.drain` stops the claiming alone, at once: ``geosleuth serve`` calls it on
SIGTERM, so a client following a job's results cannot keep a stopping server at work on the rest of
the job.

Several instances may share one database (PostgreSQL), so a claim is a lease of ``lease_s``
seconds held by this process (:func:`instance_id`): a second thread renews the leases of the items
in flight every ``lease_s / 3`` and puts back the items whose lease ran out, so a dead instance's
images go to the live ones within about ``4/3 lease_s``. At start, the runner puts back only what no
live process holds: expired leases (and items claimed before leases), and the items of an earlier
process on this host that no longer runs (:func:`owner_gone`), so a restarted single instance resumes its interrupted images at once
rather than after a lease, and a restarted instance never takes the images another one is working
on. A process on another host cannot be seen to have died; its images wait for their lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from geosleuth.errors import ImageInputError, ServiceBusyError

if TYPE_CHECKING:
    from geosleuth.agents.pipeline import Locator
    from geosleuth.schemas import LocateError, Prediction
    from geosleuth.service.storage import Claim, Storage

log = logging.getLogger(__name__)
T = TypeVar("T")


class BoundedPool:
    """``workers`` threads; at most ``queue_size`` calls admitted (waiting + running) at once."""

    def __init__(self, workers: int, queue_size: int, *, name: str = "geosleuth-serve") -> None:
        self.workers = workers
        self.queue_size = max(queue_size, workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def depth(self) -> int:
        """Calls waiting or running now."""
        return self._admitted

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self._admitted >= self.queue_size:
                raise ServiceBusyError(
                    f"the service is busy ({self._admitted} photos waiting or in progress, "
                    f"serve.queue_size {self.queue_size}); try again shortly"
                )
            self._admitted += 1
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: object) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self, *, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


def locate_bytes(locator: Locator, data: bytes, name: str) -> Prediction | LocateError:
    """One photo's result as a batch records it: a Prediction, or a LocateError for a photo that
    could not be used (or a bug on it), so a job goes on."""
    from geosleuth.agents.pipeline import input_error, internal_error

    try:
        return locator.locate(data, name=name)
    except ImageInputError as exc:
        return input_error(exc)
    except Exception as exc:
        return internal_error(exc, name)


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]": pids mean the same within one
    except OSError:
        return ""  # no namespaces (not Linux)


def instance_id() -> str:
    """This process as its claims name it: ``host/pid-namespace/pid``."""
    return f"{socket.gethostname()}/{_pid_namespace()}/{os.getpid()}"


def _running(pid: int) -> bool:
    if os.name != "posix":  # no side-effect-free test (os.kill ends a process on Windows): wait for the lease
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # a zombie (killed, not yet reaped by its parent) keeps its pid but runs nothing
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def owner_gone(owner: str) -> bool:
    """Whether the process ``owner`` (an :func:`instance_id`) is known to have stopped: it ran on
    this host, in this pid namespace, and no longer runs, or it is this very process (called when
    a job runner starts, before it claims anything: an earlier runner of this process was
    abandoned, or a dead process had this pid). False when this process cannot tell (another host
    or container), so the item waits for its lease. One job runner per process and database."""
    host, namespace, pid = owner.rsplit("/", 2) if owner.count("/") >= 2 else ("", "", "")
    if (host, namespace) != (socket.gethostname(), _pid_namespace()) or not pid.isdigit():
        return False
    return int(pid) == os.getpid() or not _running(int(pid))


class JobRunner:
    """Works through the stored job items with ``workers`` threads, holding each claimed item on a
    lease of ``lease_s`` seconds in the name of ``owner`` (see the module docstring)."""

    def __init__(
        self,
        storage: Storage,
        locate: Callable[[bytes, str], Prediction | LocateError],
        *,
        workers: int,
        lease_s: float,
        poll_s: float = 1.0,
        on_result: Callable[[Prediction | LocateError], None] | None = None,
        owner: str | None = None,
    ) -> None:
        self.storage = storage
        self.locate = locate
        self.workers = workers
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.on_result = on_result
        self.owner = owner or instance_id()
        self._slots = threading.Semaphore(workers)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._leases: threading.Thread | None = None
        self._closed = threading.Event()  # no item in flight will be recorded: stop renewing
        self._held: set[str] = set()  # claim tokens of the items in flight
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geosleuth-job")
        self._busy = 0
        self._lock = threading.Lock()
        self._abandoned = False

    @property
    def busy(self) -> int:
        """Items being located now."""
        return self._busy

    def start(self) -> int:
        """Resume what a stopped process left (not what a live one holds) and start the threads:
        how many items were resumed."""
        resumed = self.storage.requeue_running(gone=owner_gone)
        if resumed:
            log.info("resuming %d job items left unfinished by a stopped process", resumed)
        self._thread = threading.Thread(target=self._loop, name="geosleuth-jobs", daemon=True)
        self._thread.start()
        self._leases = threading.Thread(target=self._keep_leases, name="geosleuth-leases", daemon=True)
        self._leases.start()
        return resumed

    def wake(self) -> None:
        """New items are stored: look now rather than at the next poll."""
        self._wake.set()

    @property
    def draining(self) -> bool:
        """No more items are claimed (:meth:`drain` or :meth:`stop` was called)."""
        return self._stop.is_set()

    def drain(self) -> None:
        """Claim no more items, without waiting: those in flight finish and are recorded, the rest
        stay pending for the next start. Cheap and non-blocking, so a signal handler may call it
        the moment a shutdown begins (before the server waits for its open connections)."""
        self._stop.set()
        self._wake.set()

    def stop(self, *, wait: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        # Waiting, a claimed item whose thread has not started yet still runs (cancelled, it would
        # stay "running" until the next start); abandoning, it is left for the next start.
        waiting = wait and not self._abandoned
        self._pool.shutdown(wait=waiting, cancel_futures=not waiting)
        self._closed.set()
        if self._leases is not None:
            self._leases.join(timeout=10.0)

    def _keep_leases(self) -> None:
        """Every third of a lease: renew those of the items in flight here (one statement), and put
        back the items whose lease ran out, another instance's that died or this one's own."""
        while not self._closed.wait(self.lease_s / 3):
            try:
                with self._lock:
                    tokens = list(self._held)
                kept = self.storage.renew(tokens, self.lease_s)
                if kept < len(tokens):
                    log.debug("%d of %d job item leases renewed", kept, len(tokens))
                freed = self.storage.requeue_expired()
                if freed:
                    log.info("%d job items whose lease ran out are pending again", freed)
                    self._wake.set()
            except Exception:  # a database hiccup: the next round tries again
                log.exception("the job runner could not renew its leases")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                started = self._dispatch()
            except Exception:  # a database hiccup must not end the runner
                log.exception("the job runner could not read the pending items")
                started = 0
            if not started:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def _dispatch(self) -> int:
        started = 0
        for job_id, index in self.storage.pending_items(self.workers):
            if self._stop.is_set() or not self._slots.acquire(timeout=self.poll_s):
                break
            if self._stop.is_set():  # drained while this thread waited for the slot
                self._slots.release()
                break
            taken = self.storage.claim(job_id, index, owner=self.owner, lease_s=self.lease_s)
            if taken is None:  # another instance was first
                self._slots.release()
                continue
            with self._lock:
                self._busy += 1
                self._held.add(taken[0].token)
            self._pool.submit(self._work, *taken)
            started += 1
        return started

    def _work(self, claim: Claim, source: str, data: bytes) -> None:
        from geosleuth.schemas import LocateError
        from geosleuth.service.storage import new_id

        try:
            result = self.locate(data, source)
            if self._abandoned:
                return  # abandoned: stays running, resumed at the next start
            if isinstance(result, LocateError):
                recorded = self.storage.finish(claim, "failed", result.model_dump_json())
            else:
                pid = new_id("pred")
                body = result.model_dump_json(exclude={"trace"})
                recorded = self.storage.finish(claim, "done", body, prediction=(pid, result.source, body))
            if not recorded:
                log.warning(
                    "job %s item %d: its lease ran out and it went to another worker; this result is dropped",
                    claim.job_id,
                    claim.index,
                )
            if self.on_result is not None:
                self.on_result(result)
        except Exception:
            log.exception("job %s item %d could not be recorded", claim.job_id, claim.index)
        finally:
            with self._lock:
                self._busy -= 1
                self._held.discard(claim.token)
            self._slots.release()
            self._wake.set()

    def abandon(self) -> None:
        """Stop as a killed process would: in-flight items stay ``running``, their leases no longer
        renewed (tests; a hard stop)."""
        self._abandoned = True
        self._closed.set()
        self.stop(wait=False)


__all__ = ["BoundedPool", "JobRunner", "instance_id", "locate_bytes", "owner_gone"]
