"""A small async JSON-RPC client for an EVM node: single and batched calls over HTTP.

Every call has a timeout (``timeout_s``, 5 s by default). Failures are wrapped at this edge:
a connection refused or reset, a timeout or an HTTP 5xx is ``ChainUnavailable`` (a
``TransientError``: retry, the node may come back); a JSON-RPC error object is ``RpcError``
with the node's code, message and revert data. The URL is never logged or raised with its
credentials (``keeper.redaction.redact_url``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import aiohttp

from keeper.errors import KeeperError, TransientError
from keeper.redaction import redact_url

__all__ = ["ChainUnavailable", "Rpc", "RpcError", "redact_url"]


class ChainUnavailable(TransientError):
    """The node did not answer (refused, reset, timed out, 5xx)."""


class RpcError(KeeperError):
    """The node answered with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data


class Rpc:
    """JSON-RPC over HTTP to one node. ``close()`` it (or use ``async with``)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Rpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=16, force_close=False))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, body: Any) -> Any:
        try:
            async with self._client().post(self.url, json=body) as resp:
                if resp.status >= 500:
                    raise ChainUnavailable(f"{redact_url(self.url)} answered HTTP {resp.status}")
                if resp.status != 200:
                    raise RpcError("http", resp.status, f"HTTP {resp.status} from {redact_url(self.url)}")
                return await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ChainUnavailable(f"{redact_url(self.url)}: {type(exc).__name__} {exc}".strip()) from None

    async def call(self, method: str, *params: Any) -> Any:
        """One request; its ``result`` or ``RpcError``."""
        reply = await self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                                  "params": list(params)})
        return _result(method, reply)

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several requests in one HTTP round trip, results in the order asked; the first error
        raises ``RpcError``."""
        if not calls:
            return []
        first = next(self._ids)
        ids = list(range(first, first + len(calls)))
        self._ids = itertools.count(first + len(calls))
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
                for i, (m, p) in zip(ids, calls, strict=True)]
        reply = await self._post(body)
        if not isinstance(reply, list):
            return [_result(calls[0][0], reply)]
        by_id = {r.get("id"): r for r in reply}
        return [_result(m, by_id.get(i, {})) for i, (m, _) in zip(ids, calls, strict=True)]


def _result(method: str, reply: Any) -> Any:
    if not isinstance(reply, dict):
        raise RpcError(method, -32603, f"malformed reply {str(reply)[:200]!r}")
    err = reply.get("error")
    if err is not None:
        return _raise(method, err)
    if "result" not in reply:
        raise RpcError(method, -32603, "reply without result")
    return reply["result"]


def _raise(method: str, err: Any) -> Any:
    if isinstance(err, dict):
        raise RpcError(method, int(err.get("code", -32603)), str(err.get("message", "")), err.get("data"))
    raise RpcError(method, -32603, str(err))
