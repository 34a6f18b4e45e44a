"""Running photos through the (synchronous) Locator for the service: a bounded pool for single
requests, and a runner that works through the stored job items.

:class:`BoundedPool` runs calls in worker threads and refuses (:class:`ServiceBusyError`) when
``queue_size`` calls are already waiting or running, so a burst costs a 503, never unbounded memory.

:class:`JobRunner` keeps no queue in memory: the items wait in the database. Its thread claims
pending items while it has a free worker, locates each, and records the one result. At start it
puts back the items a stopped process left running (:meth:`Storage.requeue_running`), so a job
survives a restart. Stopping lets in-flight images finish (``wait``); ``wait=False`` abandons them
``running``, as a killed process would, for the next start to resume. :meth:`JobRunner.drain` stops
the claiming alone, at once: ``geosleuth serve`` calls it on SIGTERM, so a client following a job's
results cannot keep a stopping server at work on the rest of the job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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


class JobRunner:
    """Works through the stored job items with ``workers`` threads (see the module docstring)."""

    def __init__(
        self,
        storage: Storage,
        locate: Callable[[bytes, str], Prediction | LocateError],
        *,
        workers: int,
        poll_s: float = 1.0,
        on_result: Callable[[Prediction | LocateError], None] | None = None,
    ) -> None:
        self.storage = storage
        self.locate = locate
        self.workers = workers
        self.poll_s = poll_s
        self.on_result = on_result
        self._slots = threading.Semaphore(workers)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geosleuth-job")
        self._busy = 0
        self._lock = threading.Lock()
        self._abandoned = False

    @property
    def busy(self) -> int:
        """Items being located now."""
        return self._busy

    def start(self) -> int:
        """Resume what a stopped process left and start the thread: how many items were resumed."""
        resumed = self.storage.requeue_running()
        if resumed:
            log.info("resuming %d job items left unfinished by the last run", resumed)
        self._thread = threading.Thread(target=self._loop, name="geosleuth-jobs", daemon=True)
        self._thread.start()
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
            taken = self.storage.claim(job_id, index)
            if taken is None:  # another instance was first
                self._slots.release()
                continue
            with self._lock:
                self._busy += 1
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
                self.storage.finish(claim, "failed", result.model_dump_json())
            else:
                pid = new_id("pred")
                body = result.model_dump_json(exclude={"trace"})
                self.storage.finish(claim, "done", body, prediction=(pid, result.source, body))
            if self.on_result is not None:
                self.on_result(result)
        except Exception:
            log.exception("job %s item %d could not be recorded", claim.job_id, claim.index)
        finally:
            with self._lock:
                self._busy -= 1
            self._slots.release()
            self._wake.set()

    def abandon(self) -> None:
        """Stop as a killed process would: in-flight items stay ``running`` (tests; a hard stop)."""
        self._abandoned = True
        self.stop(wait=False)


__all__ = ["BoundedPool", "JobRunner", "locate_bytes"]
