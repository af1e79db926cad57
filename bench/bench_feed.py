"""Feed -> log: throughput and end-to-end latency from one local websocket server into Redis.

Three processes on loopback: a websocket server sending Binance USD-M markPrice frames (arrays
of updates, as ``!markPrice@arr`` and combined streams batch them), this process (WsFeed ->
PricePipeline -> Ingest -> RedisEventLog, conflation off so every update is appended), and a
reader on its own connection doing ``XREAD BLOCK``. A private EmbeddedRedis in a temp dir.

- ``feed_updates_per_s``: N updates sent as fast as the server can; from the first frame read
  to the last event appended.
- ``feed_latency_p50_ms`` / ``feed_latency_p99_ms``: one update per frame at a steady 2,000/s;
  from the server's send (wall clock, same machine) to the reader seeing the entry.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec

T0_MS = 1_700_000_000_000
SYMBOLS = [f"S{i:03d}USDT" for i in range(50)]
THROUGHPUT_N = 200_000
BATCH = 100
LATENCY_N = 6_000
LATENCY_RATE = 2_000


def _frame(start: int, n: int) -> str:
    return "[" + ",".join(
        f'{{"e":"markPriceUpdate","E":{T0_MS + i},"s":"{SYMBOLS[i % len(SYMBOLS)]}",'
        f'"p":"{60000 + i % 997}.25",'
        f'"i":"60000.1","P":"60000.2","r":"0.0001","T":{T0_MS + 3_600_000}}}'
        for i in range(start, start + n)) + "]"


def _server(mode: str, port_q: mp.Queue, sent_q: mp.Queue) -> None:  # type: ignore[type-arg]
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the subscription
        sent: list[int] = []
        if mode == "throughput":
            frames = [_frame(i, BATCH) for i in range(0, THROUGHPUT_N, BATCH)]
            for f in frames:
                await ws.send(f)
        else:
            frames = [_frame(i, 1) for i in range(LATENCY_N)]
            start = time.perf_counter()
            for i, f in enumerate(frames):
                due = start + i / LATENCY_RATE
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent.append(time.time_ns())
                await ws.send(f)
        sent_q.put(sent)
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, max_queue=64) as server:
            port_q.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def _reader(url: str, key: str, n: int, out_q: mp.Queue) -> None:  # type: ignore[type-arg]
    import redis.asyncio

    class P(msgspec.Struct):
        publish_time: int

    dec = msgspec.json.Decoder(P)

    async def main() -> None:
        r = redis.asyncio.Redis.from_url(url, socket_timeout=10)
        seen = [0] * n
        got = 0
        last = "$"
        out_q.put("ready")
        try:
            while got < n:
                res = await r.xread({key: last}, count=1000, block=2000)
                now = time.time_ns()
                if not res:
                    break
                for entry_id, fields in res[0][1]:
                    last = entry_id
                    i = dec.decode(fields[b"e"]).publish_time // 1000 - T0_MS
                    if 0 <= i < n and not seen[i]:
                        seen[i] = now
                        got += 1
        finally:
            await r.aclose()
        out_q.put(seen)

    asyncio.run(main())


async def _run_feed(url: str, port: int, n: int, started: list[float]) -> tuple[float, dict[str, int]]:
    from keeper.backoff import no_delay
    from keeper.feeds.ingest import Ingest
    from keeper.feeds.parsers import binance_mark_price
    from keeper.feeds.pipeline import PricePipeline
    from keeper.feeds.ws import WsConfig
    from keeper.store.redis_log import RedisEventLog

    log = await RedisEventLog.connect(url)
    ingest = Ingest(log, pipeline=PricePipeline(), conflate=False, max_pending=20_000, batch_max=2000)
    parse = binance_mark_price()
    done = asyncio.Event()

    async def on_frame(raw: bytes | str) -> None:
        if not started:
            started.append(time.perf_counter())
        await ingest.submit_frame("binance", parse, raw)

    from keeper.feeds.ws import WsFeed

    feed = WsFeed(WsConfig(f"ws://127.0.0.1:{port}", subscribe=['{"method":"SUBSCRIBE","id":1}'],
                           max_queue=64), on_frame, backoff=no_delay)
    writer = asyncio.create_task(ingest.run())
    reader = asyncio.create_task(feed.run())

    async def wait_all() -> None:
        while ingest.stats["appended"] < n:
            await asyncio.sleep(0.001)
        done.set()

    try:
        await asyncio.wait_for(wait_all(), 90)
        end = time.perf_counter()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ingest.close()
        await writer
        await log.close()
    return end, dict(ingest.stats)


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> None:
    import structlog

    from keeper.store.embedded import EmbeddedRedis

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        server.start()
        try:
            # -------- throughput: the median of 3 runs (the machine is shared and noisy)
            rates = []
            for _ in range(3):
                server.flushall()
                port_q, sent_q = ctx.Queue(), ctx.Queue()
                srv = ctx.Process(target=_server, args=("throughput", port_q, sent_q), daemon=True)
                srv.start()
                try:
                    port = port_q.get(timeout=30)
                    started: list[float] = []
                    end, stats = asyncio.run(_run_feed(server.url, port, THROUGHPUT_N, started))
                finally:
                    srv.terminate()
                    srv.join()
                rates.append(THROUGHPUT_N / (end - started[0]))
                print(f"# throughput run: {THROUGHPUT_N} updates in {end - started[0]:.2f} s, "
                      f"{rates[-1]:.0f}/s, stats {stats}", flush=True)
            print(f"bench feed_updates_per_s {sorted(rates)[1]:.0f} updates/s", flush=True)

            # -------- latency
            server.flushall()
            port_q, sent_q, out_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
            rd = ctx.Process(target=_reader, args=(server.url, "keeper:{0}:log", LATENCY_N, out_q),
                             daemon=True)
            rd.start()
            out_q.get(timeout=30)
            time.sleep(0.3)  # let the reader's first XREAD BLOCK be in place
            srv = ctx.Process(target=_server, args=("latency", port_q, sent_q), daemon=True)
            srv.start()
            try:
                port = port_q.get(timeout=30)
                asyncio.run(_run_feed(server.url, port, LATENCY_N, []))
                sent = sent_q.get(timeout=30)
                seen = out_q.get(timeout=30)
            finally:
                srv.terminate()
                srv.join()
                rd.join(timeout=10)
            lat = [(r - s) / 1e6 for s, r in zip(sent, seen, strict=True) if r]
            print(f"# latency: {len(lat)}/{LATENCY_N} updates seen at {LATENCY_RATE}/s")
            print(f"bench feed_latency_p50_ms {_pct(lat, 50):.3f} ms")
            print(f"bench feed_latency_p99_ms {_pct(lat, 99):.3f} ms", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
