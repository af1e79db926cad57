"""A local EVM node (Foundry's ``anvil``) owned by this process: tests and the chain demo.

Contract: ``anvil_binary()`` is ``$KEEPER_ANVIL`` if set, else the binary ``make setup`` installs
from npm (``node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil`` under the repository root);
missing or not executable -> ``AnvilError`` naming the fix. ``Anvil.start()`` launches it bound to
127.0.0.1 on the given port (else a free one), ``--silent``, in its own process group (a Ctrl-C
aimed at the keeper's group does not reach it), and returns once ``eth_chainId`` answers over
HTTP with the requested chain id, within 10 s; otherwise it kills the node and raises
``AnvilError`` with the tail of anvil's stderr. ``stop()`` sends SIGTERM to the node's process
group, SIGKILL after 3 s, and reaps it: no process is left; it is idempotent. ``kill()`` sends
SIGKILL at once (fault tests). ``restart()`` starts it again on the same port with the same
arguments (state is lost unless ``load_state`` names a snapshot). Usable as a context manager:
``with Anvil().start(chain_id=1) as node: ...`` (``with Anvil() as node`` starts it with defaults).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import structlog

from keeper.errors import KeeperError

__all__ = ["NPM_BINARY", "REPO_ROOT", "Anvil", "AnvilError", "anvil_binary", "free_port", "rpc"]

log = structlog.get_logger()

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_BINARY = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
_FIX = "run `make setup` (npm installs anvil) or set KEEPER_ANVIL to an anvil binary"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 3.0
_PROBE_TIMEOUT_S = 0.5
_STDERR_TAIL = 2000


class AnvilError(KeeperError):
    """The local anvil node could not be found or started."""


def anvil_binary() -> Path:
    """The anvil executable: ``$KEEPER_ANVIL``, else the npm-installed one under the repository root."""
    env = os.environ.get("KEEPER_ANVIL")
    path = Path(env) if env else REPO_ROOT / NPM_BINARY
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = f"KEEPER_ANVIL={env}" if env else str(path)
        raise AnvilError(f"no anvil binary at {where}; {_FIX}")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc(url: str, method: str, params: Sequence[Any] = (), *, timeout: float = 5.0) -> Any:
    """One JSON-RPC call over HTTP; returns ``result`` or raises ``AnvilError`` with the node's error."""
    if not url.startswith(("http://", "https://")):
        raise AnvilError(f"not an HTTP JSON-RPC URL: {url!r}")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only, checked above
        reply: dict[str, Any] = json.loads(resp.read())
    if "error" in reply:
        raise AnvilError(f"{method}: {reply['error']}")
    return reply.get("result")


class Anvil:
    """A private anvil node on loopback. See the module docstring for the contract."""

    def __init__(self, binary: Path | None = None) -> None:
        self.binary = binary
        self.port: int | None = None
        self.chain_id = 31337
        self._args: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<port>`` (the node must have been started)."""
        return f"http://127.0.0.1:{self._port()}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>``: anvil serves WebSocket on the same port."""
        return f"ws://127.0.0.1:{self._port()}"

    @property
    def pid(self) -> int | None:
        """The node's PID while it is running (or not yet reaped), else ``None``."""
        return self._proc.pid if self._proc is not None else None

    def _port(self) -> int:
        if self.port is None:
            raise AnvilError("anvil has not been started: no port yet")
        return self.port

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ life cycle

    def start(self, port: int | None = None, *, chain_id: int = 31337, block_time: float | None = None,
              load_state: Path | None = None, extra_args: Sequence[str] = ()) -> Anvil:
        """Launch the node and wait until it answers ``eth_chainId`` with ``chain_id``; returns self.

        ``block_time`` (seconds) turns on interval mining (default: a block per transaction);
        ``load_state`` starts from a state snapshot (``anvil --dump-state``); ``extra_args`` are
        passed to anvil as they are. Already running -> ``AnvilError``.
        """
        if self.running():
            raise AnvilError(f"anvil is already running (pid {self.pid}, port {self.port})")
        self.port = port if port is not None else free_port()
        self.chain_id = chain_id
        self._args = ["--chain-id", str(chain_id)]
        if block_time is not None:
            self._args += ["--block-time", f"{block_time:g}"]
        if load_state is not None:
            self._args += ["--load-state", str(load_state)]
        self._args += list(extra_args)
        self._launch()
        return self

    def restart(self) -> Anvil:
        """Stop (if running) and start again on the same port with the same arguments."""
        if self.port is None:
            raise AnvilError("anvil has not been started: nothing to restart")
        self.stop()
        self._launch()
        return self

    def _launch(self) -> None:
        exe = anvil_binary() if self.binary is None else self.binary
        port = self._port()
        argv = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--silent", *self._args]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _reap
        try:
            # its own session (and process group): signals aimed at the keeper's group miss it;
            # stop() signals this group by the node's PID
            self._proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                start_new_session=True)
        except OSError as exc:
            self._reap()
            raise AnvilError(f"cannot run {exe}: {exc}; {_FIX}") from exc
        deadline = time.monotonic() + _START_TIMEOUT_S
        last = "no answer"
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                tail = self._stderr_tail()
                self._reap()
                raise AnvilError(f"anvil exited at start (code {code}, port {port}): {tail or '(no stderr)'}")
            try:
                got = int(rpc(self.http_url, "eth_chainId", timeout=_PROBE_TIMEOUT_S), 16)
            except (OSError, ValueError, TypeError, AnvilError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if got == self.chain_id:
                    break
                last = f"eth_chainId answered {got}, not {self.chain_id}"
            if time.monotonic() > deadline:
                tail = self._stderr_tail()
                self.kill()
                raise AnvilError(f"anvil did not answer eth_chainId within {_START_TIMEOUT_S:g}s on port "
                                 f"{port} ({last}); stderr: {tail or '(empty)'}")
            time.sleep(0.02)
        log.info("anvil_started", port=port, pid=self.pid, chain_id=self.chain_id)

    def _stderr_tail(self) -> str:
        f = self._stderr
        if f is None:
            return ""
        try:
            f.seek(0)
            return f.read().decode(errors="replace")[-_STDERR_TAIL:].strip()
        except OSError:
            return ""

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # its own group: pgid == pid (start_new_session)
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.send_signal(sig)

    def _reap(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._proc = None

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 3 s; waits for the process to be gone. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        pid = proc.pid
        self._signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            proc.wait()
        log.info("anvil_stopped", port=self.port, pid=pid)
        self._reap()

    def kill(self) -> None:
        """SIGKILL at once: what a crashed node looks like. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        pid = proc.pid
        self._signal(signal.SIGKILL)
        proc.wait()
        log.info("anvil_killed", port=self.port, pid=pid)
        self._reap()

    def __enter__(self) -> Anvil:
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
