"""Calling run() with a deadline that holds in every worker model.

Upstream arms SIGALRM around run(), which only works in the main thread of a POSIX process: under threads or
waitress the deadline is silently ignored (docs/guarantees.md#w1). Here the request thread hands run() to a runner
thread and waits for it with a timeout, so the timeout response leaves on time whatever run() is doing, in any
thread, on any OS. Where the host lets the app write to the client connection itself (gunicorn), run() instead
stays in the request thread, which saves two thread handoffs per request, and a watchdog thread sends the
timeout response on the connection at the deadline (:meth:`ScoringRunner.call_inline`). Either way, what
happens to the abandoned call:

* a timeout exception is injected into the runner thread, which stops Python code at its next bytecode;
* a replacement runner is started at once, so capacity is restored for the next request;
* a call that is still stuck after ``stuck_grace`` seconds (a C call that never returns to Python) is reported to
  ``on_stuck``; the gunicorn front-end then recycles the worker process gracefully.

Concurrency is bounded by a semaphore (``WORKER_THREADS``, default 1): many models are not thread-safe, so
running run() concurrently inside one process is opt-in. Health routes never take the semaphore.
"""

from __future__ import annotations

import contextvars
import ctypes
import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..exceptions import UserScriptTimeout

logger = logging.getLogger("azmlinfsrv")

DEFAULT_STUCK_GRACE_SECONDS = 5.0


class AnsweredTimeout(UserScriptTimeout):
    """The watchdog answered this inline call's timeout itself and freed its scoring slot."""


class _AbandonedRun(BaseException):
    """Injected into a runner whose caller gave up; BaseException so that ``except Exception`` does not eat it."""


class _Task:
    __slots__ = (
        "abandoned",
        "context",
        "done",
        "error",
        "fn",
        "finished",
        "kwargs",
        "result",
        "thread_id",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        context: contextvars.Context,
    ) -> None:
        self.fn = fn
        self.kwargs = kwargs
        self.context = context
        # A plain lock held until the task finishes: cheaper to hand over than an Event (no Condition).
        self.done = threading.Lock()
        self.done.acquire()
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.thread_id: int | None = None


class _Deadline:
    """One inline call under watch. Whoever claims it first (the call returning, or the watchdog) answers."""

    __slots__ = ("answer_timeout", "claimed_by", "expired_at", "lock", "returned", "thread_id")

    def __init__(self, thread_id: int, answer_timeout: Callable[[], None]) -> None:
        self.thread_id = thread_id
        self.answer_timeout = answer_timeout
        self.lock = threading.Lock()
        self.claimed_by: str | None = None
        self.returned = False
        self.expired_at = 0.0

    def claim_for_call(self) -> bool:
        with self.lock:
            if self.claimed_by is None:
                self.claimed_by = "call"
            return self.claimed_by == "call"

    def claim_for_watchdog(self) -> bool:
        """Claim and stop the call's Python code, in one step under the lock."""
        with self.lock:
            if self.claimed_by is not None:
                return False
            self.claimed_by = "watchdog"
            _inject(self.thread_id, _AbandonedRun)
            return True


_PURGE_EVERY = 256


def _nothing() -> None:
    pass


# The environ key under which a host that took a scoring slot for a request hands it to the app (a SlotLease).
SLOT_LEASE_KEY = "azmlinfsrv.slot_lease"


class SlotLease:
    """A scoring slot a host took before calling the app, so it never dispatches more calls than slots.

    The app claims it in place of :meth:`ScoringRunner.acquire` and releases the slot as usual; a request that
    never reaches run() (a 404, a 431, a 503 during init) leaves it unclaimed and the host returns it.
    """

    __slots__ = ("_runner", "_state")

    def __init__(self, runner: ScoringRunner) -> None:
        self._runner = runner
        self._state = 0  # 0 held by the host, 1 claimed by the app, 2 returned

    def claim(self) -> bool:
        if self._state == 0:
            self._state = 1
            return True
        return False

    def release_unclaimed(self) -> None:
        if self._state == 0:
            self._state = 2
            self._runner.release()


class _Watchdog:
    """One thread per process that expires inline calls at their deadlines.

    Waking it costs a thread switch, which costs as much as a small request. Calls mostly share one timeout, so a
    new deadline is almost never earlier than the one the thread already sleeps until: it is woken only for one
    that is, and otherwise finds new deadlines when it wakes up on its own (at the earliest deadline, or every
    ``_IDLE_WAIT`` seconds).
    """

    _IDLE_WAIT = 1.0

    def __init__(self, runner: ScoringRunner) -> None:
        self._runner = runner
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._counter = 0
        self._wakeup = threading.Condition()
        self._wake_at = 0.0  # when the thread wakes up by itself; 0 while it is awake
        threading.Thread(target=self._run, name="azmlinfsrv-watchdog", daemon=True).start()

    def watch(self, entry: _Deadline, deadline: float) -> None:
        with self._wakeup:
            self._counter += 1
            if self._counter % _PURGE_EVERY == 0:
                # Finished calls leave the heap lazily, from the top; behind a long call still running, they would
                # pile up (each holding its request) until that call's deadline, an hour by default.
                self._heap = [item for item in self._heap if item[2].claimed_by is None]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (deadline, self._counter, entry))
            if self._wake_at and deadline < self._wake_at:
                self._wake_at = 0.0
                self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                # Finished calls are dropped lazily, when they reach the top.
                while self._heap and self._heap[0][2].claimed_by is not None:
                    heapq.heappop(self._heap)
                now = time.monotonic()
                if not self._heap:
                    self._wake_at = now + self._IDLE_WAIT
                    self._wakeup.wait(self._IDLE_WAIT)
                    self._wake_at = 0.0
                    continue
                deadline, _, entry = self._heap[0]
                delay = deadline - now
                if delay > 0:
                    self._wake_at = deadline
                    self._wakeup.wait(delay)
                    self._wake_at = 0.0
                    continue
                heapq.heappop(self._heap)
            if entry.claim_for_watchdog():
                self._runner._expire(entry)


def _inject(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` asynchronously in another thread (CPython only; a no-op elsewhere)."""
    try:
        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    except AttributeError:  # pragma: no cover - not CPython
        return False
    return bool(set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)) == 1)


class ScoringRunner:
    """Runs user calls with bounded concurrency and a deadline. Thread-safe."""

    def __init__(
        self,
        concurrency: int = 1,
        timeout_ms: int = 0,
        on_stuck: Callable[[int], None] | None = None,
        stuck_grace: float = DEFAULT_STUCK_GRACE_SECONDS,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.timeout_ms = timeout_ms
        self.on_stuck = on_stuck
        self.stuck_grace = stuck_grace
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._runners = 0
        self._closed = False
        self.timeouts = 0  # calls answered with a timeout
        self.stuck = 0  # abandoned calls still running
        self._watchdog_thread: _Watchdog | None = None

    # -- public ------------------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Wait for a scoring slot. Paired with :meth:`release`."""
        self._slots.acquire()

    def release(self) -> None:
        self._slots.release()

    def has_free_slot(self) -> bool:
        """Whether a call could start now (a hint: another thread may take the slot first)."""
        return self._slots._value > 0  # type: ignore[attr-defined]

    def try_acquire(self) -> bool:
        """Take a scoring slot if one is free, without waiting."""
        return self._slots.acquire(blocking=False)

    def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Call ``fn(**kwargs)`` under the deadline; raises :class:`UserScriptTimeout` or fn's exception.

        The caller holds a slot (:meth:`acquire`). The call sees the caller's context variables, so Flask's
        ``request`` proxy works inside run().
        """
        if self.timeout_ms <= 0:
            return fn(**kwargs)
        task = _Task(fn, kwargs, contextvars.copy_context())
        self._submit(task)
        if not task.done.acquire(timeout=self.timeout_ms / 1000.0) and self._abandon(task):
            raise UserScriptTimeout(self.timeout_ms)
        if task.error is not None:
            raise task.error
        return task.result

    def call_inline(self, fn: Callable[..., Any], kwargs: dict[str, Any], answer_timeout: Callable[[], None]) -> Any:
        """Call ``fn(**kwargs)`` in this thread; at the deadline the watchdog answers for it.

        Used when the host lets the app write to the client connection itself (gunicorn): it saves the two thread
        handoffs of :meth:`call`, which cost more CPU than a small model's whole request. At the deadline the
        watchdog claims the request, injects a timeout into this thread (stopping Python code), calls
        ``answer_timeout`` (which sends the timeout response on the connection and closes it) and frees the
        scoring slot. If it does, this call raises :class:`UserScriptTimeout` once ``fn`` returns, and the caller's
        own response goes nowhere. Like :meth:`call`, the caller holds a slot.
        """
        if self.timeout_ms <= 0:
            return fn(**kwargs)
        entry = _Deadline(threading.get_ident(), answer_timeout)
        self._watchdog().watch(entry, time.monotonic() + self.timeout_ms / 1000.0)
        error: BaseException | None = None
        try:
            result = fn(**kwargs)
        except _AbandonedRun:
            result = None
        except BaseException as exc:
            result, error = None, exc
        # The watchdog claims and injects atomically; once we know it claimed, its injected exception is the only
        # one that can still arrive, and it is cleared before anything else runs here.
        while True:
            try:
                owns = entry.claim_for_call()
                if not owns:
                    self._clear_pending_async_exc()
                break
            except _AbandonedRun:
                continue
        if not owns:
            with self._lock:
                self.stuck -= 1
            entry.returned = True
            raise AnsweredTimeout(self.timeout_ms)
        entry.returned = True
        # The entry stays in the watchdog's heap until it is purged; it must not keep the request alive there.
        entry.answer_timeout = _nothing
        if error is not None:
            raise error
        return result

    def _watchdog(self) -> _Watchdog:
        with self._lock:
            if self._watchdog_thread is None:
                self._watchdog_thread = _Watchdog(self)
            return self._watchdog_thread

    def _expire(self, entry: _Deadline) -> None:
        """The watchdog found ``entry`` past its deadline and claimed it."""
        with self._lock:
            self.timeouts += 1
            self.stuck += 1
        try:
            entry.answer_timeout()
        except Exception:
            logger.exception("Could not send the scoring-timeout response")
        # The slot is free again: the stuck call no longer counts against WORKER_THREADS (capacity restored).
        self.release()
        entry.expired_at = time.monotonic()
        watchdog = threading.Timer(self.stuck_grace, self._check_inline_stuck, args=(entry,))
        watchdog.daemon = True
        watchdog.start()

    def _check_inline_stuck(self, entry: _Deadline) -> None:
        if entry.returned:
            return
        logger.warning(
            "A timed-out run() call is still running %.1f s after its deadline (a blocking call that cannot be "
            "interrupted); %d such call(s) in this process.",
            time.monotonic() - entry.expired_at,
            self.stuck,
        )
        if self.on_stuck is not None:
            self.on_stuck(self.stuck)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            runners = self._runners
        for _ in range(runners):
            self._tasks.put(None)

    # -- runners -----------------------------------------------------------------------------------------

    def _submit(self, task: _Task) -> None:
        with self._lock:
            start = self._idle == 0
            if start:
                self._runners += 1
            else:
                self._idle -= 1
        if start:
            threading.Thread(target=self._runner, name="azmlinfsrv-run", daemon=True).start()
        self._tasks.put(task)

    def _runner(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            with self._lock:
                skip = task.abandoned  # its caller gave up before any runner picked it up
                task.thread_id = threading.get_ident()
            if not skip:
                try:
                    task.result = task.context.run(task.fn, **task.kwargs)
                except _AbandonedRun:
                    pass
                except BaseException as exc:  # the request thread re-raises it
                    task.error = exc
            with self._lock:
                task.thread_id = None
                if task.abandoned:
                    self.stuck -= 1
                # A runner whose task was abandoned has been replaced already: it retires.
                retire = task.abandoned or self._closed
                if retire:
                    self._runners -= 1
                else:
                    self._idle += 1
                # Under the lock so that _abandon() sees either a finished task or a running one.
                task.finished = True
                task.done.release()
            if retire:
                self._clear_pending_async_exc()
                return

    @staticmethod
    def _clear_pending_async_exc() -> None:
        # An injected exception that arrived after run() returned would hit the next bytecode of this thread.
        try:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
        except AttributeError:  # pragma: no cover
            pass

    def _abandon(self, task: _Task) -> bool:
        """Give up on a late task; False when it finished in the meantime (then its result stands)."""
        with self._lock:
            if task.finished:
                return False
            task.abandoned = True
            self.timeouts += 1
            self.stuck += 1
            thread_id = task.thread_id
        if thread_id is not None:
            _inject(thread_id, _AbandonedRun)
        watchdog = threading.Timer(self.stuck_grace, self._check_stuck, args=(task, time.monotonic()))
        watchdog.daemon = True
        watchdog.start()
        return True

    def _check_stuck(self, task: _Task, since: float) -> None:
        if task.finished:
            return
        logger.warning(
            "A timed-out run() call is still running %.1f s after its deadline (a blocking call that cannot be "
            "interrupted); %d such call(s) in this process.",
            time.monotonic() - since,
            self.stuck,
        )
        if self.on_stuck is not None:
            self.on_stuck(self.stuck)
