"""The gunicorn worker: an event loop that reads whole requests, and runs each in the thread that picked it up.

Why not one of gunicorn's own workers:

* the sync worker (upstream's) holds the process for the whole request: no keep-alive, no probe answered while
  run() is busy, and a slow client stalls the worker;
* the gthread worker hands every request from its event loop to a pool thread and back. On a small model those
  two thread handoffs cost more CPU than the request itself, and a client trickling its request head holds a pool
  thread for as long as it likes.

This worker reads request heads and bodies in its event loop, with deadlines, so a slow client holds only a
buffer (docs/guarantees.md#r5). A complete request becomes a job, and the thread that leads the loop takes the job and
runs it itself: no handoff on the hot path. Leadership passes between threads through one lock
(leader/follower):

* ``WORKER_THREADS`` *primary* threads take turns leading and run jobs, so at most that many run() calls run at
  once, as each takes a scoring slot of the app's ScoringRunner before it starts;
* when every primary has been busy in a job for a moment, the main thread wakes a *spare* thread to lead. Spares
  answer probes, /metrics and swagger while run() is busy (W6) and park scoring requests until a slot frees. On
  the hot path they sleep, so a small request never pays for them;
* the main thread keeps gunicorn's heartbeat, applies signal handlers a score script installed while loading,
  and runs the graceful shutdown. A long run() never looks like a hung worker; a call stuck in native code that
  holds the GIL stops the heartbeat too, and gunicorn then replaces the worker.

Requests for the score route, ``/`` and ``/swagger.json`` that arrive during init() wait in the loop, not in a
thread. With several workers, a worker whose slots are all busy leaves new connections to the others for a few
milliseconds, so concurrent requests spread over idle workers instead of queueing behind a busy one.
"""

from __future__ import annotations

import collections
import datetime
import io
import json
import mmap
import os
import select
import selectors
import socket
import sys
import threading
import time
from email.utils import formatdate
from typing import TYPE_CHECKING
from typing import Any

from gunicorn.workers.base import Worker

from .http11 import ChunkedDecoder
from .http11 import Head
from .http11 import HttpError
from .http11 import Limits
from .http11 import parse_head

if TYPE_CHECKING:
    from azureml_inference_server_http.server.scoring import SlotLease
    from azureml_inference_server_http.server.state import ServerState

# Keys of the core app's environ hooks, repeated here: the gunicorn master imports this module to find the worker
# class, and importing the core's server package would load Flask into the master (and so into every worker twice
# over, once shared and once touched). A test checks they match the core's.
CLOSE_CONNECTION_KEY = "azmlinfsrv.close_connection"
STATE_KEY = "azmlinfsrv.state"
SLOT_LEASE_KEY = "azmlinfsrv.slot_lease"

SCORE_PATH = "/score"
# Routes that answer only once init() has completed; their requests wait in the loop meanwhile.
_WAIT_FOR_INIT = frozenset((SCORE_PATH, "/", "/swagger.json"))


def _is_scoring(path: str) -> bool:
    """/score and the Open Inference Protocol's infer routes call run(): they take a scoring slot, wait for init()."""
    return path == SCORE_PATH or (path.startswith("/v2/models/") and path.endswith("/infer"))


TICK = 0.01  # how often the main thread looks at the loop
RESCUE_AFTER = 0.02  # a loop left unattended this long gets a spare thread
MAX_SPARES = 16
HEAD_TIMEOUT = 10.0  # a request head must be complete this long after its first byte
BODY_IDLE_TIMEOUT = 30.0  # a request body must make progress at least this often
SEND_TIMEOUT = 30.0  # a client must take response bytes at least this often
LINGER = 2.0  # after answering a request whose body was not read, how long to drain it before closing
STOP_IDLE_GRACE = 1.0  # when the worker stops, how long an idle keep-alive connection stays open
BUSY_ACCEPT_DELAY = 0.002  # with several workers, how long a busy or crowded worker leaves accepts to others
MAX_ACCEPT_DEFERRAL = 0.02  # after this long, a waiting connection is accepted whatever the other workers do
SWEEP_EVERY = 0.5
ACCEPT_BATCH = 64
READ_SIZE = 262144
BIG_BUFFER = 65536
GATHER_ABOVE = 16384  # response bodies larger than this are sent with their head by sendmsg(), not concatenated
# Large request bodies read ahead of their turn are bounded (see _admit): bodies of LARGE_BODY bytes or more are
# read only while those already buffered and not yet running add up to less than BODY_BUFFER_BUDGET (one is always
# allowed). A body still incomplete after SLOW_BODY seconds stops counting, so that slow clients cannot hold the
# budget: they hold only what they have sent.
LARGE_BODY = 256 * 1024
BODY_BUFFER_BUDGET = 2 * 1024 * 1024
SLOW_BODY = 1.0

_KEEP, _CLOSE, _LINGER = range(3)  # what happens to a connection after its response
_ON, _PAUSED, _CLOSED = range(3)  # the listening sockets


class _Listener:
    __slots__ = ("server_name", "server_port", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        address = sock.getsockname()
        if isinstance(address, tuple):
            self.server_name, self.server_port = str(address[0]), str(address[1])
        else:  # a unix socket
            self.server_name, self.server_port = str(address), ""


class _Connection:
    __slots__ = (
        "buf",
        "chunks",
        "closed",
        "deadline",
        "fd",
        "head",
        "held",
        "lingering",
        "listener",
        "peer",
        "pos",
        "registered",
        "reserved",
        "reserved_until",
        "sock",
    )

    def __init__(self, sock: socket.socket, peer: Any, listener: _Listener, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.listener = listener
        self.buf = bytearray()
        self.head: Head | None = None
        self.chunks: ChunkedDecoder | None = None
        self.pos = 0  # where the body starts (or, for a chunked body, how far it was decoded)
        self.deadline = deadline
        self.registered = False
        self.lingering = False
        self.closed = False
        self.held = False  # waiting, unread, for room in the body budget
        self.reserved = 0  # bytes of the body budget this connection's body counts for
        self.reserved_until = 0.0


class _Job:
    """One complete request, and the writing of its response (PEP 3333 ``start_response`` and ``write``)."""

    __slots__ = (
        "body_left",
        "body_mode",
        "conn",
        "environ",
        "head",
        "head_sent",
        "headers",
        "must_close",
        "reserved",
        "scoring",
        "sent",
        "status",
        "unread_body",
        "worker",
    )

    _NONE, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)

    def __init__(self, worker: EventLoopWorker, conn: _Connection, head: Head, environ: dict[str, Any]) -> None:
        self.worker = worker
        self.conn = conn
        self.head = head
        self.environ = environ
        self.scoring = _is_scoring(head.path)
        self.must_close = not head.keep_alive
        self.unread_body = False
        self.reserved = 0
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.head_sent = False
        self.body_mode = self._NONE
        self.body_left = 0
        self.sent = 0

    def close_after_response(self) -> None:
        self.must_close = True

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self.status = status
        self.headers = headers
        return self.write

    def _head(self) -> bytes:
        status = self.status
        if status is None:
            raise AssertionError("the app returned without calling start_response()")
        headers = self.headers
        text = "".join([f"{name}: {value}\r\n" for name, value in headers])
        if text.count("\n") != len(headers) or text.count("\r") != len(headers):
            raise ValueError("a response header contains a line break")
        length: int | None = None
        hop_by_hop = False
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                length = int(value)
            elif lower == "connection" or lower == "transfer-encoding":
                # Hop-by-hop fields are ours to set (PEP 3333); the app may only ask for the connection to close.
                hop_by_hop = True
                if value.lower() == "close":
                    self.must_close = True
        if hop_by_hop:
            text = "".join(
                [
                    f"{name}: {value}\r\n"
                    for name, value in headers
                    if name.lower() not in ("connection", "transfer-encoding")
                ]
            )
        code = status[:3]
        if self.head.method == "HEAD" or code in ("204", "304") or code[0] == "1":
            self.body_mode = self._NONE
        elif length is not None:
            self.body_mode = self._LENGTH
            self.body_left = length
        elif self.head.version == "HTTP/1.1":
            self.body_mode = self._CHUNKED
            text += "Transfer-Encoding: chunked\r\n"
        else:
            self.body_mode = self._UNTIL_CLOSE
            self.must_close = True
        keep = not self.must_close and not self.worker.stopping
        if not keep:
            self.must_close = True
        return (
            f"{self.head.version} {status}\r\nServer: azmlinfsrv\r\nDate: {_http_date()}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n{text}\r\n"
        ).encode("latin-1")

    def write(self, data: bytes) -> None:
        out = b""
        if not self.head_sent:
            out = self._head()
            self.head_sent = True
        mode = self.body_mode
        if data:
            if mode == self._LENGTH:
                if len(data) > self.body_left:
                    data = data[: self.body_left]
                self.body_left -= len(data)
            elif mode == self._CHUNKED:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            elif mode == self._NONE:
                data = b""
        if out and len(data) > GATHER_ABOVE:
            # Head and a large body in one system call, without copying the body behind the head.
            _send_all_parts(self.conn.sock, out, data)
            self.sent += len(out) + len(data)
            return
        out = out + data if out else data
        if out:
            _send_all(self.conn.sock, out)
            self.sent += len(out)

    def finish(self) -> None:
        if not self.head_sent:
            self.write(b"")
        if self.body_mode == self._CHUNKED:
            _send_all(self.conn.sock, b"0\r\n\r\n")
        elif self.body_mode == self._LENGTH and self.body_left:
            self.must_close = True  # the app sent less than it declared: the connection cannot be reused


def _send_all(sock: socket.socket, data: bytes | memoryview) -> None:
    """sendall() for a non-blocking socket, waiting at most SEND_TIMEOUT for the client to take each part.

    (A socket with a timeout would do this itself, but CPython then polls before every send: one more system call
    per response, when the first send almost always takes everything.)
    """
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    deadline = time.monotonic() + SEND_TIMEOUT
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the client did not take the response")
        if not poller.poll(remaining * 1000.0):
            continue
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            pass


def _send_all_parts(sock: socket.socket, head: bytes, body: bytes) -> None:
    try:
        sent = sock.sendmsg([head, body])
    except BlockingIOError:
        sent = 0
    if sent < len(head):
        _send_all(sock, head[sent:])
        _send_all(sock, body)
    elif sent < len(head) + len(body):
        _send_all(sock, memoryview(body)[sent - len(head) :])


_date = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date[0] != now:
        _date[1] = formatdate(now, usegmt=True)
        _date[0] = now
    return str(_date[1])


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


def _error_response(status: int, message: str) -> bytes:
    """A complete JSON error response, for requests the app never sees."""
    body = json.dumps({"message": message}).encode("utf-8")
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nServer: azmlinfsrv\r\nDate: {_http_date()}\r\n"
        f"Connection: close\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body


class _AccessResponse:
    """What gunicorn's access logger reads from its response object."""

    __slots__ = ("headers", "sent", "status")

    def __init__(self, job: _Job) -> None:
        self.status = job.status or "500"
        self.sent = job.sent
        self.headers = job.headers


class _AccessRequest:
    """What gunicorn's access logger reads from its request object: the request headers."""

    __slots__ = ("headers",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self.headers = [(k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")]


class LoadBoard:
    """How many connections each worker holds, in memory shared by the master and every worker it forks.

    With several workers, a worker that holds more connections than another lets that one accept the next
    connection (least connections). Without it, the worker that wakes first takes a whole burst of new connections,
    and since keep-alive connections stay with their worker, one worker served everything while the other idled.
    The master gives each worker a free slot before forking it and frees the slot when the worker exits.
    """

    EMPTY = -1

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, 4 * slots)
        self._counts = memoryview(self._memory).cast("i")
        for index in range(slots):
            self._counts[index] = self.EMPTY
        self._owner: dict[int, int] = {}  # master only: worker age -> slot

    def claim(self, age: int) -> int | None:
        """In the master, before forking worker ``age``: a free slot, marked in use (None when all are taken)."""
        used = set(self._owner.values())
        slot = next((index for index in range(self.slots) if index not in used), None)
        if slot is None:
            return None
        self._owner[age] = slot
        self._counts[slot] = 0
        return slot

    def release(self, age: int) -> None:
        slot = self._owner.pop(age, None)
        if slot is not None:
            self._counts[slot] = self.EMPTY

    def set(self, slot: int, connections: int) -> None:
        self._counts[slot] = connections

    def least_other(self, slot: int) -> int | None:
        """The fewest connections any other live worker holds (None when there is no other)."""
        counts = self._counts
        least: int | None = None
        for index in range(self.slots):
            value = counts[index]
            if index != slot and value != self.EMPTY and (least is None or value < least):
                least = value
        return least


class EventLoopWorker(Worker):  # type: ignore[misc]
    """See the module docstring. ``cfg.threads`` is ``WORKER_THREADS``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.primaries = max(1, int(cfg.threads))
        self.limits = Limits(cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size)
        self.keepalive = float(cfg.keepalive) if cfg.keepalive and cfg.keepalive > 0 else 0.0
        self.max_connections = max(1, int(cfg.worker_connections))
        self.several_workers = int(cfg.workers) > 1
        self.stopping = False
        self._exiting = False
        # Set by the master before it forks this worker (see LoadBoard); absent with a single worker.
        self.load_board: LoadBoard | None = None
        self.load_slot = 0

    # -- set-up --------------------------------------------------------------------------------------------

    def load_wsgi(self) -> None:
        from azureml_inference_server_http.server.state import ServerState

        from . import allocator

        allocator.tune()  # before the app starts its threads (see allocator.py)
        super().load_wsgi()
        state = getattr(self.wsgi, "extensions", {}).get(STATE_KEY)
        if not isinstance(state, ServerState):
            raise RuntimeError("EventLoopWorker serves the app made by azureml_inference_server_http.create_app")
        self._app_state: ServerState | None = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        state = getattr(self, "_app_state", None)
        if state is not None:
            if not state.ready.is_set():
                # Still loading the model: nothing is in flight, and waiting for init() to finish only to stop
                # would hold the shutdown for up to the graceful timeout.
                os._exit(0)
            state.start_draining()
        super().handle_exit(sig, frame)

    def notify(self) -> None:
        # Imported here, in the worker: the master never loads the server (and Flask) into its own memory.
        from azureml_inference_server_http.server.main_thread import deferred_signals

        deferred_signals.apply()
        super().notify()

    def run(self) -> None:
        from azureml_inference_server_http.server.scoring import SlotLease

        state = self._app_state
        assert state is not None  # load_wsgi() ran
        self._lease_class: type[SlotLease] = SlotLease
        self.runner = state.runner
        self.body_limit: int | None = state.config.max_request_body_bytes
        self._settled_event = state.settled
        self._settled = state.settled.is_set()
        self._init_wait: list[_Job] = []
        self._access = bool(self.cfg.accesslog)

        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.listeners = [_Listener(getattr(s, "sock", s)) for s in self.sockets]
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self.selector.register(listener.sock, selectors.EVENT_READ, listener)
        self._listening = _ON
        self._accept_resume = 0.0
        self._poll_soon = False
        self._deferred_since = 0.0
        self.conns: set[_Connection] = set()
        self.ready: collections.deque[_Job] = collections.deque()
        self.pending: collections.deque[_Job] = collections.deque()  # scoring jobs waiting for a slot
        self.returned: collections.deque[tuple[_Connection, int]] = collections.deque()
        self.held: collections.deque[_Connection] = collections.deque()  # large bodies not read yet (_admit)
        self.buffered = 0  # bytes of large bodies being read or waiting to run
        self._resume_due = False
        self.base_environ = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": self.several_workers,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "SCRIPT_NAME": "",
            "SERVER_SOFTWARE": "azmlinfsrv",
        }
        self._forwarded_allow = {ip.strip() for ip in str(self.cfg.forwarded_allow_ips).split(",")}
        self._next_sweep = time.monotonic() + SWEEP_EVERY

        self.leader_lock = threading.Lock()
        self.count_lock = threading.Lock()
        self.leading = False
        self.unattended_since = time.monotonic()
        self.busy_primaries = 0
        self.inflight = 0
        self._spare_cond = threading.Condition()
        self._spares = 0
        self._idle_spares = 0
        self._spare_tokens = 0

        for index in range(self.primaries):
            threading.Thread(target=self._primary, name=f"azmlinfsrv-request-{index}", daemon=True).start()
        if not self._settled:
            threading.Thread(target=self._wake_when_settled, name="azmlinfsrv-init-wait", daemon=True).start()
        self._monitor()

    # -- the main thread -------------------------------------------------------------------------------------

    def _monitor(self) -> None:
        last_notify = 0.0
        graceful_deadline: float | None = None
        while True:
            try:
                select.select([self.PIPE[0]], [], [], TICK)
            except InterruptedError:
                pass
            try:
                while os.read(self.PIPE[0], 4096):
                    pass
            except OSError:
                pass
            now = time.monotonic()
            if now - last_notify >= 0.5:
                self.notify()
                last_notify = now
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
            if not self._settled and self._settled_event.is_set():
                self._wake()
            if not self.leading and now - self.unattended_since > RESCUE_AFTER:
                self._rescue()
            if not self.alive:
                if graceful_deadline is None:
                    graceful_deadline = now + float(self.cfg.graceful_timeout)
                    self.stopping = True
                    self._wake()
                with self.count_lock:
                    idle = self.inflight == 0
                drained = idle and not self.ready and not self.pending and not self._init_wait and not self.conns
                if drained or now >= graceful_deadline:
                    self._exiting = True
                    self.notify()
                    return

    def _wake_when_settled(self) -> None:
        """Requests that came during init() (the first health probe, usually) wait in the loop: run them the moment
        init() ends, not at the main thread's next tick."""
        self._settled_event.wait()
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    def _rescue(self) -> None:
        with self._spare_cond:
            if self._idle_spares:
                self._idle_spares -= 1
                self._spare_tokens += 1
                self._spare_cond.notify()
                return
            if self._spares >= MAX_SPARES:
                return
            self._spares += 1
        threading.Thread(target=self._spare, name=f"azmlinfsrv-spare-{self._spares}", daemon=True).start()

    # -- threads ---------------------------------------------------------------------------------------------

    def _primary(self) -> None:
        while not self._exiting:
            with self.leader_lock:
                self.leading = True
                try:
                    job = self._next_job(spare=False)
                finally:
                    self.leading = False
                    self.unattended_since = time.monotonic()
            if job is None:
                return
            with self.count_lock:
                self.busy_primaries += 1
            try:
                self._run_job(job)
            finally:
                with self.count_lock:
                    self.busy_primaries -= 1
                self._give_back(job)
                # Let go of the request (its body, the parsed input, the response) before waiting to lead again:
                # otherwise every idle thread keeps its last request alive.
                del job

    def _spare(self) -> None:
        while not self._exiting:
            with self.leader_lock:
                self.leading = True
                try:
                    job = self._next_job(spare=True)
                finally:
                    self.leading = False
                    self.unattended_since = time.monotonic()
            if job is not None:
                try:
                    self._run_job(job)
                finally:
                    self._give_back(job)
                    del job  # as in _primary: an idle spare must not keep its last request alive
                if self.busy_primaries == self.primaries:
                    continue  # every primary still busy: keep the loop attended
            with self._spare_cond:
                self._idle_spares += 1
                while not self._spare_tokens:
                    self._spare_cond.wait()
                self._spare_tokens -= 1

    # -- the loop (run by whichever thread holds leader_lock) ------------------------------------------------

    def _next_job(self, spare: bool) -> _Job | None:
        selector = self.selector
        while True:
            if self.returned:
                self._take_back()
            if self._resume_due:
                self._resume_held()
            now = time.monotonic()
            if self._poll_soon:
                # More connections may wait in the backlog (several workers accept one per poll): poll before
                # the next job rather than after the queue of ready jobs is done.
                self._poll_soon = False
                timeout = 0.0
            else:
                job = self._pick()
                if job is not None:
                    with self.count_lock:
                        self.inflight += 1
                    if job.reserved:
                        # Its body is the running request's now: make room for the next one before running it.
                        self._unreserve(job.reserved)
                        job.reserved = 0
                        self._resume_held()
                    return job
                if self._exiting or (spare and self.busy_primaries < self.primaries):
                    return None
                if self.stopping and self._listening != _CLOSED:
                    self._close_listeners()
                timeout = 0.05 if spare or self.stopping else max(0.0, min(1.0, self._next_sweep - now))
                if self._accept_resume and self._listening == _PAUSED:
                    timeout = min(timeout, max(0.0, self._accept_resume - now))
            try:
                events = selector.select(timeout)
            except InterruptedError:
                events = []
            now = time.monotonic()
            for key, _ in events:
                data = key.data
                if data is None:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except OSError:
                        pass
                elif data.__class__ is _Connection:
                    self._read(data, now)
                else:
                    self._accept(data, now)
            if self._listening == _PAUSED and self._accept_resume and now >= self._accept_resume:
                self._resume_accepting()
            if now >= self._next_sweep:
                self._sweep(now)

    def _pick(self) -> _Job | None:
        if not self._settled and self._settled_event.is_set():
            self._settled = True
            self.ready.extendleft(reversed(self._init_wait))
            self._init_wait = []
        pending = self.pending
        if pending and self.runner.try_acquire():
            return pending.popleft()
        ready = self.ready
        while ready:
            job = ready.popleft()
            if not self._settled and (job.scoring or job.head.path in _WAIT_FOR_INIT):
                self._init_wait.append(job)
                continue
            if not job.scoring:
                return job
            if not pending and self.runner.try_acquire():
                return job
            pending.append(job)
        return None

    def _accept(self, listener: _Listener, now: float) -> None:
        if self.several_workers and self._leave_to_others(now):
            return
        # One worker takes every waiting connection at once: the loop does not poll while it has requests to
        # run, so taking one per poll would leave connections waiting in the backlog for as many rounds. With
        # several workers, one per poll, so that connections spread over the workers.
        for _ in range(1 if self.several_workers else ACCEPT_BATCH):
            if len(self.conns) >= self.max_connections:
                self._pause_accepting(0.0)
                return
            try:
                sock, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of file descriptors, most likely
                self.log.warning("accept() failed: %s", exc)
                self._pause_accepting(now + 0.1)
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, peer, listener, now + HEAD_TIMEOUT)
            self.conns.add(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)
            conn.registered = True
            if self.load_board is not None:
                self.load_board.set(self.load_slot, len(self.conns))
        self._poll_soon = self.several_workers

    def _leave_to_others(self, now: float) -> bool:
        """Whether to leave the waiting connection to another worker for a moment: this one has no free slot, or
        holds more connections than another. Never for long: if nobody takes it, this worker does."""
        board = self.load_board
        crowded = False
        if board is not None:
            least = board.least_other(self.load_slot)
            crowded = least is not None and len(self.conns) > least
        if not crowded and self.runner.has_free_slot():
            self._deferred_since = 0.0
            return False
        if not self._deferred_since:
            self._deferred_since = now
        elif now - self._deferred_since > MAX_ACCEPT_DEFERRAL:
            self._deferred_since = 0.0
            return False
        self._pause_accepting(now + BUSY_ACCEPT_DELAY)
        return True

    def _pause_accepting(self, until: float) -> None:
        if self._listening == _ON:
            for listener in self.listeners:
                self.selector.unregister(listener.sock)
            self._listening = _PAUSED
        self._accept_resume = until

    def _resume_accepting(self) -> None:
        if self._listening == _PAUSED:
            for listener in self.listeners:
                self.selector.register(listener.sock, selectors.EVENT_READ, listener)
            self._listening = _ON
            self._accept_resume = 0.0

    def _close_listeners(self) -> None:
        """Draining: the master closed its copies already, so once every worker has, connections are refused
        instead of waiting unanswered in the backlog (R4)."""
        for listener in self.listeners:
            if self._listening == _ON:
                self.selector.unregister(listener.sock)
            try:
                listener.sock.close()
            except OSError:
                pass
        self._listening = _CLOSED
        # Idle keep-alive connections get a moment to send the request they may be sending right now (closing
        # under it would reset it); their next response says "Connection: close".
        deadline = time.monotonic() + STOP_IDLE_GRACE
        for conn in self.conns:
            if conn.registered and not conn.buf and conn.head is None and not conn.lingering:
                conn.deadline = min(conn.deadline, deadline)

    def _idle_timeout(self) -> float:
        return STOP_IDLE_GRACE if self.stopping else self.keepalive or HEAD_TIMEOUT

    def _read(self, conn: _Connection, now: float) -> None:
        try:
            data = os.read(conn.fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        if conn.lingering:
            return
        if conn.head is not None:
            conn.deadline = now + BODY_IDLE_TIMEOUT
        elif not conn.buf:
            conn.deadline = now + HEAD_TIMEOUT  # the first byte of a request head
        conn.buf += data
        self._advance(conn, now)

    def _advance(self, conn: _Connection, now: float) -> bool:
        """Parse what ``conn`` has buffered; a complete request becomes a job.

        Returns False while the connection waits for more input, True once it was dispatched or closed.
        """
        buf = conn.buf
        head = conn.head
        if head is None:
            while buf[:2] == b"\r\n":  # RFC 9112 §2.2: empty lines before a request line are ignored
                del buf[:2]
            if not buf:
                return False
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.limits.head_bytes:
                    self._reject(conn, HttpError(431, "Request header fields too large."))
                    return True
                return False
            try:
                head = parse_head(bytes(buf[:end]), self.limits)
            except HttpError as exc:
                self._reject(conn, exc)
                return True
            conn.head = head
            conn.pos = end + 4
            conn.deadline = now + BODY_IDLE_TIMEOUT
            limit = self.body_limit
            if head.chunked:
                conn.chunks = ChunkedDecoder(limit)
            elif limit is not None and head.content_length > limit:
                # The app answers 413 from Content-Length alone; the body is never read.
                del buf[:]
                self._dispatch(conn, head, b"", unread_body=True)
                return True
            elif (
                head.content_length >= LARGE_BODY
                and len(buf) - conn.pos < head.content_length  # not read already (pipelined behind a request)
                and not self._admit(conn, head.content_length, now)
            ):
                return False  # held: read once the bodies ahead of it are running
            self._continue_if_expected(conn, head)
        chunks = conn.chunks
        if chunks is not None:
            try:
                conn.pos = chunks.feed(buf, conn.pos)
            except HttpError as exc:
                self._reject(conn, exc)
                return True
            if len(buf) > BIG_BUFFER:
                conn.buf = buf = bytearray(buf[conn.pos :])
            else:
                del buf[: conn.pos]
            conn.pos = 0
            if chunks.over_limit:
                del buf[:]
                self._dispatch(conn, head, bytes(chunks.body), unread_body=True)
            elif chunks.done:
                self._dispatch(conn, head, bytes(chunks.body), unread_body=False)
            else:
                return False
            return True
        end = conn.pos + head.content_length
        if len(buf) < end:
            return False
        if head.content_length:
            with memoryview(buf) as view:  # one copy of the body, not two (a slice, then bytes of it)
                body = view[conn.pos : end].tobytes()
        else:
            body = b""
        if len(buf) > BIG_BUFFER:
            # A keep-alive connection would keep a large body's allocation for as long as it stays open.
            conn.buf = bytearray(buf[end:])
        else:
            del buf[:end]
        self._dispatch(conn, head, body, unread_body=False)
        return True

    def _continue_if_expected(self, conn: _Connection, head: Head) -> None:
        if head.expect_continue and (head.chunked or len(conn.buf) - conn.pos < head.content_length):
            try:
                os.write(conn.fd, b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass

    def _admit(self, conn: _Connection, size: int, now: float) -> bool:
        """Count a large body against the body budget, or hold its connection unread until there is room.

        While every run() slot is busy the loop keeps reading requests, so without a bound eight 1 MB uploads are
        8 MB buffered for requests that cannot run yet. A held connection's bytes wait in the kernel and its
        client's send blocks, as with a server that reads one request at a time.
        """
        if self.held or (self.buffered and self.buffered + size > BODY_BUFFER_BUDGET):
            if conn.registered:
                self.selector.unregister(conn.sock)
                conn.registered = False
            conn.held = True
            self.held.append(conn)
            return False
        self._reserve(conn, size, now)
        return True

    def _reserve(self, conn: _Connection, size: int, now: float) -> None:
        self.buffered += size
        conn.reserved = size
        conn.reserved_until = now + SLOW_BODY

    def _unreserve(self, size: int) -> None:
        self.buffered -= size
        if self.held:
            self._resume_due = True

    def _resume_held(self) -> None:
        """Read held connections, oldest first, as far as the budget allows (always at least one)."""
        self._resume_due = False
        held = self.held
        now = time.monotonic()
        while held:
            conn = held[0]
            head = conn.head
            if conn.closed or head is None:
                held.popleft()
                conn.held = False
                continue
            size = head.content_length
            if self.buffered and self.buffered + size > BODY_BUFFER_BUDGET:
                return
            held.popleft()
            conn.held = False
            self._reserve(conn, size, now)
            conn.deadline = now + BODY_IDLE_TIMEOUT
            self._continue_if_expected(conn, head)
            if not self._advance(conn, now) and not conn.closed and not conn.registered:
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)
                conn.registered = True

    def _dispatch(self, conn: _Connection, head: Head, body: bytes, unread_body: bool) -> None:
        conn.head = None
        conn.chunks = None
        conn.pos = 0
        if conn.registered:
            self.selector.unregister(conn.sock)
            conn.registered = False
        environ = self.base_environ.copy()
        environ.update(head.environ)
        environ["wsgi.input"] = io.BytesIO(body)
        peer = conn.peer
        if isinstance(peer, tuple):
            environ["REMOTE_ADDR"] = peer[0]
            environ["REMOTE_PORT"] = str(peer[1])
            if peer[0] in self._forwarded_allow and environ.get("HTTP_X_FORWARDED_PROTO") == "https":
                environ["wsgi.url_scheme"] = "https"
        else:
            environ["REMOTE_ADDR"] = ""
        environ["SERVER_NAME"] = conn.listener.server_name
        environ["SERVER_PORT"] = conn.listener.server_port
        environ["gunicorn.socket"] = conn.sock
        job = _Job(self, conn, head, environ)
        job.reserved, conn.reserved = conn.reserved, 0
        if unread_body:
            job.unread_body = job.must_close = True
        elif not self.keepalive:
            job.must_close = True
        environ[CLOSE_CONNECTION_KEY] = job.close_after_response
        self.ready.append(job)

    def _reject(self, conn: _Connection, error: HttpError) -> None:
        """A request that cannot be parsed: a JSON error, then the connection is closed (R13)."""
        try:
            os.write(conn.fd, _error_response(error.status, error.message))
        except OSError:
            pass
        conn.head = None
        conn.chunks = None
        self._linger(conn, time.monotonic())

    def _linger(self, conn: _Connection, now: float) -> None:
        """Close after the client had a chance to read the response: closing a socket with unread input resets
        the connection, and the reset can destroy the response before the client read it."""
        if conn.reserved:
            self._unreserve(conn.reserved)
            conn.reserved = 0
        del conn.buf[:]
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.lingering = True
        conn.deadline = now + LINGER
        if not conn.registered:
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
            conn.registered = True

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.reserved:
            self._unreserve(conn.reserved)
            conn.reserved = 0
        if conn.registered:
            self.selector.unregister(conn.sock)
            conn.registered = False
        self.conns.discard(conn)
        if self.load_board is not None:
            self.load_board.set(self.load_slot, len(self.conns))
        try:
            conn.sock.close()
        except OSError:
            pass
        if self._listening == _PAUSED and not self._accept_resume:
            self._resume_accepting()  # paused at the connection limit

    def _take_back(self) -> None:
        """Connections whose response was sent come back to the loop."""
        now = time.monotonic()
        returned = self.returned
        while returned:
            conn, action = returned.popleft()
            if action == _CLOSE:
                self._close(conn)
            elif action == _LINGER:
                self._linger(conn, now)
            else:
                conn.deadline = now + (HEAD_TIMEOUT if conn.buf else self._idle_timeout())
                if not self._advance(conn, now) and not conn.held and not conn.closed:
                    self.selector.register(conn.sock, selectors.EVENT_READ, conn)
                    conn.registered = True

    def _sweep(self, now: float) -> None:
        """Close connections past their deadline: idle keep-alive, slow heads, stalled bodies, lingering."""
        self._next_sweep = now + SWEEP_EVERY
        for conn in list(self.conns):
            if conn.reserved and conn.head is not None and now > conn.reserved_until:
                self._unreserve(conn.reserved)  # a slow body: it holds what it sent, not the budget
                conn.reserved = 0
            if conn.registered and now > conn.deadline:
                if conn.lingering or not conn.buf and conn.head is None:
                    self._close(conn)
                else:  # a slow head or a stalled body: say so, then close after the linger
                    self._reject(conn, HttpError(408, "The request was not received in time."))

    # -- running a job (in the thread that picked it) --------------------------------------------------------

    def _run_job(self, job: _Job) -> None:
        environ = job.environ
        lease = None
        if job.scoring:
            lease = self._lease_class(self.runner)
            environ[SLOT_LEASE_KEY] = lease
        started = time.monotonic() if self._access else 0.0
        try:
            try:
                result = self.wsgi(environ, job.start_response)
            finally:
                if lease is not None:
                    lease.release_unclaimed()
            try:
                for chunk in result:
                    if chunk:
                        job.write(chunk)
                job.finish()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except OSError:
            job.must_close = True  # the client went away, or the watchdog answered a timeout on this socket
        except Exception:
            self.log.exception("Error handling request %s", environ.get("RAW_URI"))
            job.must_close = True
            if not job.head_sent:
                try:
                    _send_all(job.conn.sock, _error_response(500, "An unexpected internal error occurred."))
                except OSError:
                    pass
        if self._access:
            self._log_access(job, time.monotonic() - started)

    def _give_back(self, job: _Job) -> None:
        # The environ holds the job's close callback and the job holds the environ: a reference cycle that would keep
        # the body alive until the garbage collector's next full pass, which under load with large bodies is tens of
        # MB. Break it once the response is out. (Flask breaks the other one, environ <-> Request, itself.)
        job.environ.pop(CLOSE_CONNECTION_KEY, None)
        conn = job.conn
        if not job.must_close:
            action = _KEEP
        elif job.unread_body:
            action = _LINGER
        else:
            action = _CLOSE
        self.returned.append((conn, action))
        with self.count_lock:
            self.inflight -= 1
        if self.leading:
            self._wake()
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False

    def _log_access(self, job: _Job, seconds: float) -> None:
        try:
            self.log.access(
                _AccessResponse(job), _AccessRequest(job.environ), job.environ, datetime.timedelta(seconds=seconds)
            )
        except Exception:
            self.log.exception("Could not write the access log line")
