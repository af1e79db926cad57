"""A projector process for the crash test: folds the log slowly, snapshotting often.

usage: python -m tests.projector.crash_worker REDIS_URL OUT_FILE
Writes the final state's bytes to OUT_FILE when it has caught up with the log.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from keeper.domain.state import encode_state
from keeper.projector import ProjectionCore, Projector
from keeper.store.redis_log import RedisEventLog
from keeper.store.snapshots import RedisSnapshotStore


def factory(data: bytes | None) -> ProjectionCore:
    return ProjectionCore() if data is None else ProjectionCore.restore(data)


async def main(url: str, out: Path) -> None:
    log = await RedisEventLog.connect(url)
    try:
        p = Projector(log, RedisSnapshotStore(log.client), factory, batch=250, snapshot_every=1000)
        await p.start()
        print(f"started restored_from={p.restored_from}", flush=True)
        while True:
            before = p.position
            await p.step()
            if p.position == before:
                break
            await asyncio.sleep(0.005)
        await p.snapshot()
        assert isinstance(p.core, ProjectionCore)
        out.write_bytes(encode_state(p.core.state))
        print(f"done applied={p.applied}", flush=True)
    finally:
        await log.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
