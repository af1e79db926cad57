"""Contract ABIs: encode calls and decode event logs and reverts (``eth_abi``, from web3.py).

Values come out normalised for the log: unsigned integers as ``int``, addresses as ``0x``
lowercase hex, ``bytes32`` as ``0x`` hex, a struct flattened into its fields' names. A log
whose topic is not in the ABI decodes to ``None`` (the caller counts it); a log that matches but
does not decode raises ``AbiError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_utils.crypto import keccak

from keeper.errors import KeeperError

__all__ = ["AbiError", "Contract", "revert_reason", "signature"]


class AbiError(KeeperError):
    """A log or a return value that does not decode as its ABI says."""


def _type(item: Mapping[str, Any]) -> str:
    t = str(item["type"])
    if t.startswith("tuple"):
        inner = ",".join(_type(c) for c in item["components"])
        return f"({inner}){t[5:]}"
    return t


def signature(item: Mapping[str, Any]) -> str:
    return f"{item['name']}({','.join(_type(i) for i in item['inputs'])})"


def _norm(item: Mapping[str, Any], value: Any) -> Any:
    t = str(item["type"])
    if t == "address":
        return str(value).lower()
    if t.startswith("bytes") and isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if t == "bool":
        return int(bool(value))
    return value


def _flatten(items: Sequence[Mapping[str, Any]], values: Sequence[Any], out: dict[str, int | str]) -> None:
    for item, value in zip(items, values, strict=True):
        if str(item["type"]) == "tuple":
            _flatten(item["components"], value, out)
        else:
            out[str(item["name"])] = _norm(item, value)


class Contract:
    """One contract's ABI: ``call_data`` for its functions, ``decode_log`` for its events."""

    def __init__(self, abi: Sequence[Mapping[str, Any]]) -> None:
        self.abi = list(abi)
        self.functions = {str(i["name"]): i for i in abi if i.get("type") == "function"}
        self.events = {"0x" + keccak(text=signature(i)).hex(): i
                       for i in abi if i.get("type") == "event"}
        self.topics = {str(i["name"]): t for t, i in self.events.items()}
        self.errors = {keccak(text=signature(i))[:4]: i for i in abi if i.get("type") == "error"}

    def call_data(self, name: str, *args: Any) -> str:
        fn = self.functions[name]
        types = [_type(i) for i in fn["inputs"]]
        return "0x" + keccak(text=signature(fn))[:4].hex() + abi_encode(types, list(args)).hex()

    def decode_return(self, name: str, data: str) -> tuple[Any, ...]:
        fn = self.functions[name]
        try:
            raw = bytes.fromhex(data.removeprefix("0x"))
            return tuple(abi_decode([_type(o) for o in fn["outputs"]], raw))
        except (DecodingError, ValueError) as exc:
            raise AbiError(f"{name}: return value does not decode: {exc}") from None

    def decode_log(self, log: Mapping[str, Any]) -> tuple[str, dict[str, int | str]] | None:
        """``(event name, args)`` of a raw log, or ``None`` if its topic is not this ABI's."""
        topics = [str(t) for t in log.get("topics", [])]
        if not topics or topics[0].lower() not in self.events:
            return None
        item = self.events[topics[0].lower()]
        indexed = [i for i in item["inputs"] if i.get("indexed")]
        plain = [i for i in item["inputs"] if not i.get("indexed")]
        try:
            if len(topics) - 1 != len(indexed):
                raise AbiError(f"{item['name']}: {len(topics) - 1} topics for {len(indexed)} indexed inputs")
            values: dict[int, Any] = {}
            for i, topic in zip(indexed, topics[1:], strict=True):
                values[id(i)] = abi_decode([_type(i)], bytes.fromhex(topic[2:]))[0]
            data = bytes.fromhex(str(log.get("data", "0x"))[2:])
            for i, v in zip(plain, abi_decode([_type(i) for i in plain], data), strict=True):
                values[id(i)] = v
        except (DecodingError, ValueError) as exc:
            raise AbiError(f"{item['name']}: log does not decode: {exc}") from None
        out: dict[str, int | str] = {}
        _flatten(item["inputs"], [values[id(i)] for i in item["inputs"]], out)
        return str(item["name"]), out


def revert_reason(data: Any) -> str:
    """The reason of a revert's return data: ``Error(string)``, ``Panic(uint256)``, or hex."""
    if not isinstance(data, str) or not data.startswith("0x") or len(data) < 10:
        return "reverted without a reason"
    raw = bytes.fromhex(data[2:])
    if raw[:4] == bytes.fromhex("08c379a0"):
        try:
            return str(abi_decode(["string"], raw[4:])[0])
        except DecodingError:
            return "reverted with an undecodable reason"
    if raw[:4] == bytes.fromhex("4e487b71"):
        code = int(abi_decode(["uint256"], raw[4:])[0])
        return {0x11: "panic: arithmetic overflow or underflow", 0x12: "panic: division by zero"}.get(
            code, f"panic: code {code:#x}")
    return f"reverted: {data[:74]}"
