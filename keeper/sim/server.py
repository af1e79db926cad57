"""The reference venue's network shell: aiohttp REST, the ``/prices`` and ``/accounts``
websockets, the price player and the injected faults' effects on requests. The rules live in
``keeper.sim.venue``, the faults' state and draws in ``keeper.sim.faults``, signatures and price
frames in ``keeper.sim.wire``; the wire protocol is specified in ``keeper/sim/PROTOCOL.md``.

Usage (in-process, e.g. the demo or a test)::

    sim = await start_sim(secret=b"s3cret", accounts=1000, seed=1, path=synthetic_crash(1))
    ...  # sim.url, sim.venue, await sim.played.wait()
    await sim.stop()

Contracts: every connection and task the server opens is closed by ``stop()``; a reply held by
the ``timeout_next`` fault is released by ``stop()`` at once; the price player keeps an absolute
schedule (``ts_us`` offsets divided by ``speed``), so slow sends never accumulate drift; a
liquidation whose ``X-Keeper-Deadline`` has passed when its turn comes is never applied, so once
that time is past, ``GET /liquidations/{id}`` answering ``unknown`` is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import structlog
from aiohttp import WSCloseCode, web

from keeper.domain.events import Decision
from keeper.scenarios.book import DEFAULT_PRICES, generate_book
from keeper.sim.faults import FaultInjector, Faults, spec_error
from keeper.sim.prices import Tick
from keeper.sim.venue import Venue
from keeper.sim.wire import DEADLINE_HEADER, MAX_BATCH, mark_price_array, sign, status_message

__all__ = ["SimServer", "start_sim"]

log = structlog.get_logger()


class SimServer:
    """The venue behind HTTP and websockets. ``start()`` binds 127.0.0.1, ``stop()`` closes all.

    ``timestamps`` is ``wall`` (event times and ``E`` from the system clock: what a live keeper
    with staleness guards expects) or ``path`` (the price path's own times).
    """

    def __init__(self, secret: bytes, *, venue: Venue | None = None, path: Sequence[Tick] = (),
                 speed: float = 60.0, timestamps: str = "wall", max_queue: int = 10_000) -> None:
        if not secret:
            raise ValueError("the venue needs a non-empty HMAC secret")
        if timestamps not in ("wall", "path"):
            raise ValueError(f"timestamps must be wall or path, got {timestamps!r}")
        self.secret = secret
        self.path = list(path)
        self.speed = speed
        self.timestamps = timestamps
        self.max_queue = max_queue
        self._path_now = self.path[0].ts_us if self.path else 0
        self.venue = venue if venue is not None else Venue(self.now_us)
        self._injector = FaultInjector()
        self.ticks_played = 0
        self.played = asyncio.Event()
        self.url = ""
        self._closing = asyncio.Event()
        self._wake = asyncio.Event()
        self._price_queues: dict[web.WebSocketResponse, asyncio.Queue[str]] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._player: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.venue.on_event(self._on_event)

    @property
    def faults(self) -> Faults:
        """The injected faults in force and their counters (``POST /faults``)."""
        return self._injector.faults

    def now_us(self) -> int:
        if self.timestamps == "path":
            return self._path_now
        return time.time_ns() // 1000

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/liquidations", self.handle_liquidation)
        app.router.add_post("/liquidations/batch", self.handle_liquidation_batch)
        # ``.+``: an intent id holds ``/`` (sent percent-encoded, matched decoded)
        app.router.add_get("/liquidations/{intent_id:.+}", self.handle_status)
        app.router.add_get("/markets", self.handle_markets)
        app.router.add_post("/faults", self.handle_faults)
        app.router.add_post("/marks", self.handle_marks)
        app.router.add_post("/play", self.handle_play)
        app.router.add_get("/stats", self.handle_stats)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/accounts/{id}", self.handle_account)
        app.router.add_get("/prices", self.handle_prices)
        app.router.add_get("/accounts", self.handle_accounts)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0, play: bool = True) -> str:
        """Bind and serve; returns the base URL (``http://127.0.0.1:<port>``)."""
        self._runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        bound = server.sockets[0].getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        if play:
            self.play()
        log.info("sim.started", url=self.url, accounts=len(self.venue.accounts), events=self.venue.seq,
                 ticks=len(self.path), speed=self.speed)
        return self.url

    def play(self) -> None:
        """Start the price player (once); ``played`` is set when the path is exhausted."""
        if self._player is None:
            self._player = asyncio.create_task(self._play(), name="sim-price-player")

    async def stop(self) -> None:
        """Stop playing, release held replies, close every websocket and the listener."""
        self._closing.set()
        if self._player is not None:
            self._player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._player
        await self.drop_websockets(WSCloseCode.GOING_AWAY, count=False)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        st = self.venue.stats
        log.info("sim.stopped", url=self.url, accepted=st.accepted, rejected=st.rejected,
                 duplicates=st.duplicates, bad_debt=str(st.bad_debt))

    # ------------------------------------------------------------------ prices

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.path:
            self.played.set()
            return
        t0, first = loop.time(), self.path[0].ts_us
        for tick in self.path:
            if self.speed > 0:
                delay = t0 + (tick.ts_us - first) / 1e6 / self.speed - loop.time()
                await asyncio.sleep(max(delay, 0.0))
            else:
                await asyncio.sleep(0)
            self.set_prices(tick.ts_us, tick.prices)
            self.ticks_played += 1
        self.played.set()
        log.info("sim.path_played", ticks=self.ticks_played)

    def set_prices(self, ts_us: int, prices: Mapping[str, Decimal]) -> None:
        """Update the venue's marks and broadcast them on ``/prices`` as one frame (an array of
        every market's ``markPriceUpdate``: one tick is one instant)."""
        self._path_now = ts_us
        self.venue.set_marks(ts_us, prices)
        ts_ms = (ts_us if self.timestamps == "path" else self.now_us()) // 1000
        frames = [mark_price_array(prices, ts_ms)] if prices else []
        for ws, q in list(self._price_queues.items()):
            for f in frames:
                try:
                    q.put_nowait(f)
                except asyncio.QueueFull:
                    # A consumer that cannot keep up is cut off rather than buffered without bound.
                    self._price_queues.pop(ws, None)
                    asyncio.get_running_loop().create_task(ws.close(code=WSCloseCode.POLICY_VIOLATION,
                                                                    message=b"slow consumer"))
                    break

    async def handle_prices(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        q: asyncio.Queue[str] = asyncio.Queue(self.max_queue)
        ts_ms = self.now_us() // 1000 if self.timestamps == "wall" else self.venue.mark_time_us // 1000
        marks = {m: p for m, p in sorted(self.venue.marks.items()) if "-" in m}
        if marks:
            q.put_nowait(mark_price_array(marks, ts_ms))
        self._price_queues[ws] = q
        await self._serve(ws, self._send_prices(ws, q), "prices")
        self._price_queues.pop(ws, None)
        return ws

    async def _send_prices(self, ws: web.WebSocketResponse, q: asyncio.Queue[str]) -> None:
        while True:
            await ws.send_str(await q.get())

    # ------------------------------------------------------------------ account events

    def _on_event(self, _seq: int) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def handle_accounts(self, request: web.Request) -> web.WebSocketResponse:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="after must be an integer sequence") from None
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        await self._serve(ws, self._send_accounts(ws, after), "accounts", after=after)
        return ws

    async def _send_accounts(self, ws: web.WebSocketResponse, after: int) -> None:
        cursor = after
        while True:
            wake = self._wake
            batch = self.venue.events_after(cursor)
            if not batch:
                await wake.wait()
                continue
            for seq, payload in batch:
                await ws.send_str(payload.decode())
                cursor = seq

    async def _serve(self, ws: web.WebSocketResponse, sender: Any, stream: str, **ctx: Any) -> None:
        """Run ``sender`` while reading (and ignoring) client frames until either side closes."""
        self._sockets.add(ws)
        task = asyncio.create_task(sender)
        bound = log.bind(stream=stream, **ctx)
        bound.info("sim.ws_open")
        try:
            reader = asyncio.create_task(self._drain(ws))
            await asyncio.wait({task, reader}, return_when=asyncio.FIRST_COMPLETED)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await task
            self._sockets.discard(ws)
            if not ws.closed:
                await ws.close()
            bound.info("sim.ws_closed", code=ws.close_code)

    @staticmethod
    async def _drain(ws: web.WebSocketResponse) -> None:
        async for _ in ws:
            pass

    async def drop_websockets(self, code: int = WSCloseCode.GOING_AWAY, *, count: bool = True) -> int:
        """Close every open websocket now; returns how many were open."""
        sockets = list(self._sockets)
        for ws in sockets:
            await ws.close(code=code, message=b"dropped by the venue")
        if count:
            self.faults.ws_drops += len(sockets)
        return len(sockets)

    # ------------------------------------------------------------------ REST

    async def handle_liquidation(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._signed(request, "sim.liquidation")
        if refused is not None:
            return refused
        try:
            decision = msgspec.json.decode(body, type=Decision)
        except msgspec.DecodeError as exc:
            return web.json_response({"status": "invalid", "reason": str(exc)}, status=400)
        key = request.headers.get("Idempotency-Key", decision.intent_id)
        if key != decision.intent_id:
            return web.json_response({"status": "invalid",
                                      "reason": "Idempotency-Key does not match intent_id"}, status=400)
        self.venue.count_request(key)
        bound = log.bind(intent_id=key, account=decision.account, bucket=decision.bucket,
                         action=decision.action)
        refused = await self._before_apply(request, bound, "sim.liquidation")
        if refused is not None:
            return refused
        result = self.venue.liquidate(decision, key)
        bound.info("sim.liquidation", status=result.http_status, ref=result.ref, reason=result.reason,
                   events=len(result.events))
        lost = await self._after_apply(request, result.http_status)
        if lost is not None:
            return lost
        return web.Response(body=result.body(), status=result.http_status, content_type="application/json")

    async def handle_liquidation_batch(self, request: web.Request) -> web.StreamResponse:
        """``POST /liquidations/batch``: up to ``MAX_BATCH`` decisions in one signed request, each
        under its own intent id (per-item idempotency, exactly as one ``POST /liquidations``
        each), applied in the order given; one answer carries every item's result. Faults apply
        to the request as a whole (a 5xx applies nothing; a lost reply applies everything)."""
        body, refused = await self._signed(request, "sim.liquidation_batch")
        if refused is not None:
            return refused
        try:
            decisions = msgspec.json.decode(body, type=list[Decision])
        except msgspec.DecodeError as exc:
            return web.json_response({"status": "invalid", "reason": str(exc)}, status=400)
        if not 0 < len(decisions) <= MAX_BATCH:
            return web.json_response({"status": "invalid",
                                      "reason": f"a batch holds 1 to {MAX_BATCH} decisions"}, status=400)
        if len({d.intent_id for d in decisions}) != len(decisions):
            return web.json_response({"status": "invalid", "reason": "an intent id twice in one batch"},
                                     status=400)
        for d in decisions:
            self.venue.count_request(d.intent_id)
        bound = log.bind(items=len(decisions))
        refused = await self._before_apply(request, bound, "sim.liquidation_batch")
        if refused is not None:
            return refused
        results = [self.venue.liquidate(d, d.intent_id) for d in decisions]
        bound.info("sim.liquidation_batch", status=200,
                   accepted=sum(r.status == "accepted" for r in results))
        lost = await self._after_apply(request, 200)
        if lost is not None:
            return lost
        out = b'{"results":[' + b",".join(
            b'{"intent_id":' + msgspec.json.encode(d.intent_id) + b',"result":' + r.body() + b"}"
            for d, r in zip(decisions, results, strict=True)) + b"]}"
        return web.Response(body=out, status=200, content_type="application/json")

    async def _signed(self, request: web.Request, what: str) -> tuple[bytes, web.Response | None]:
        """The body, or the 401 for a bad or missing ``X-Keeper-Signature`` (nothing counted)."""
        body = await request.read()
        given = request.headers.get("X-Keeper-Signature", "")
        if hmac.compare_digest(sign(self.secret, body), given.strip().lower()):
            return body, None
        log.info(what, status=401, reason="bad or missing signature")
        return body, web.json_response({"status": "unauthorized", "reason": "bad or missing signature"},
                                       status=401)

    async def _before_apply(self, request: web.Request, bound: Any, what: str) -> web.Response | None:
        """The injected faults before a trading request is applied (rate limit, 5xx, delay) and
        its ``X-Keeper-Deadline``: the answer that refuses it, or None to apply it."""
        raw_deadline = request.headers.get(DEADLINE_HEADER)
        try:
            deadline_ms = None if raw_deadline is None else int(raw_deadline)
        except ValueError:
            return web.json_response({"status": "invalid", "reason": f"{DEADLINE_HEADER} must be an integer"},
                                     status=400)
        f = self.faults
        limited = self._rate_limited(bound, what)
        if limited is not None:
            return limited
        if self._injector.take_5xx():
            bound.info(what, status=f.status_5xx, fault="http_5xx")
            after = {"Retry-After": str(f.retry_after)} if f.retry_after_5xx else None
            return web.json_response({"status": "unavailable", "reason": "injected fault"},
                                     status=f.status_5xx, headers=after)
        if f.delay_ms > 0:
            await self._hold(f.delay_ms)
        if deadline_ms is not None and time.time_ns() // 1_000_000 > deadline_ms:
            # The client has given up on this request: applying it now would be an acceptance
            # nobody hears of, after a status query may already have said "unknown".
            f.late_refused += 1
            bound.info(what, status=408, reason="deadline passed")
            return web.json_response({"status": "late", "reason": "deadline passed: not applied"}, status=408)
        return None

    async def _after_apply(self, request: web.Request, status: int) -> web.Response | None:
        """The injected lost reply of an applied request: the connection cut (``drop``), or the
        reply held past any sane client timeout (``hang``, then None: the reply goes out late)."""
        lost = self._injector.lost_reply()
        if lost == "drop":
            # Applied, then the connection is cut before any reply: a lost reply.
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=status)
        if lost == "hang":
            # Applied, then the reply is held past any sane client timeout: a lost reply.
            await self._hold(self.faults.hang_ms)
        return None

    def _rate_limited(self, bound: Any, what: str) -> web.Response | None:
        """The injected 429 for this trading request, or None when it may proceed."""
        if not self._injector.rate_limited():
            return None
        f = self.faults
        bound.info(what, status=429, fault="rate_limit", retry_after=f.retry_after)
        return web.json_response({"status": "rate_limited", "reason": "injected rate limit"}, status=429,
                                 headers={"Retry-After": str(f.retry_after)})

    async def handle_status(self, request: web.Request) -> web.Response:
        key = request.match_info["intent_id"]
        given = request.headers.get("X-Keeper-Signature", "")
        if not hmac.compare_digest(sign(self.secret, status_message(key)), given.strip().lower()):
            log.info("sim.status", intent_id=key, status=401, reason="bad or missing signature")
            return web.json_response({"status": "unauthorized", "reason": "bad or missing signature"},
                                     status=401)
        bound = log.bind(intent_id=key)
        limited = self._rate_limited(bound, "sim.status")
        if limited is not None:
            return limited
        result = self.venue.status(key)
        bound.info("sim.status", status=200 if result else 404, ref=result.ref if result else None)
        if result is None:
            return web.json_response({"status": "unknown"}, status=404)
        return web.Response(body=result.body(), status=200, content_type="application/json")

    async def handle_markets(self, _request: web.Request) -> web.Response:
        return web.json_response(self.venue.market_view())

    async def _hold(self, ms: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), ms / 1000)

    async def handle_faults(self, request: web.Request) -> web.Response:
        try:
            spec = msgspec.json.decode(await request.read(), type=dict[str, Any])
        except msgspec.DecodeError as exc:
            return web.json_response({"status": "invalid", "reason": str(exc)}, status=400)
        error = spec_error(spec)
        if error is not None:
            return web.json_response({"status": "invalid", "reason": error}, status=400)
        self._injector.configure(spec)
        if spec.get("clear"):
            self.venue.halted.clear()
        self.venue.halted.update(spec.get("halt", ()))
        self.venue.halted.difference_update(spec.get("resume", ()))
        dropped = await self.drop_websockets() if spec.get("drop_ws") else 0
        log.info("sim.faults", **spec)
        return web.json_response({"status": "ok", "faults": msgspec.to_builtins(self.faults),
                                  "ws_dropped": dropped, "halted": sorted(self.venue.halted)})

    async def handle_marks(self, request: web.Request) -> web.Response:
        try:
            spec = msgspec.json.decode(await request.read(), type=dict[str, Any])
            prices = {str(k): Decimal(str(v)) for k, v in spec["prices"].items()}
            self.set_prices(int(spec.get("ts_us", self.now_us())), prices)
        except (msgspec.DecodeError, KeyError, ArithmeticError, ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"status": "invalid", "reason": repr(exc)}, status=400)
        return web.json_response({"status": "ok"})

    async def handle_play(self, _request: web.Request) -> web.Response:
        self.play()
        return web.json_response({"status": "ok", "ticks": len(self.path)})

    async def handle_stats(self, _request: web.Request) -> web.Response:
        out = self.venue.stats_view()
        out.update(faults=msgspec.to_builtins(self.faults), ticks_played=self.ticks_played,
                   ticks_total=len(self.path), websockets=len(self._sockets))
        return web.json_response(out)

    async def handle_healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "seq": self.venue.seq, "ticks_played": self.ticks_played,
                                  "ticks_total": len(self.path), "played": self.played.is_set()})

    async def handle_account(self, request: web.Request) -> web.Response:
        try:
            view = self.venue.account_view(request.match_info["id"])
        except KeyError:
            return web.json_response({"status": "unknown account"}, status=404)
        return web.json_response(view)


async def start_sim(secret: bytes, *, accounts: int = 10_000, seed: int = 1, path: Sequence[Tick] = (),
                    speed: float = 60.0, host: str = "127.0.0.1", port: int = 0, play: bool = True,
                    timestamps: str = "wall") -> SimServer:
    """Build a venue with a generated book priced at the path's first tick, and serve it."""
    sim = SimServer(secret, path=path, speed=speed, timestamps=timestamps)
    first = path[0].prices if path else DEFAULT_PRICES
    sim.venue.set_marks(path[0].ts_us if path else 0, first)
    book = generate_book(accounts, seed, first)
    sim.venue.load(book.events)
    await sim.start(host, port, play=play)
    return sim
