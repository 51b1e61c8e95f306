"""New blocks and ERC-20 ``Transfer`` logs from an Ethereum-compatible JSON-RPC node.

Raw JSON-RPC over httpx (``eth_blockNumber``, ``eth_getBlockByNumber``, ``eth_getLogs``):
no web3 dependency. What the source does, and what it decided:

- **Rows.** One frame per block. The block itself is a row of key ``block`` (metrics
  ``number``, ``gas_used``, ``base_fee`` in gwei, ``tx_count``); each ``Transfer`` log of a
  listed token contract is a row keyed by the token's symbol (metric ``amount`` in token
  units, the raw value divided by ``10 ** decimals``; texts ``from``, ``to``, ``tx``).
  Every row carries ``number`` and the block's hash (text ``block_hash``); a column a row
  does not have is NaN or null.
- **Confirmations.** Only blocks at least ``confirmations`` deep are emitted (block ``n`` once
  the head is ``n + confirmations``), so a reorganisation shallower than that is never seen
  downstream: rows are held, not retracted.
- **Reorgs.** The hashes of the last ``history`` emitted blocks are remembered. Each poll
  checks that the newest emitted block is still canonical and that every new block's
  ``parentHash`` is the hash we emitted below it. If not, the source walks back to the common
  ancestor and, *before* any row of the replacement blocks, emits a retraction frame: the rows
  of every orphaned block again, with the metric ``retracted`` = 1 (0 on every other row). The
  engine drops retraction rows before the detector; a signal already sent for an orphaned
  block stays in the append-only signal log. Each orphaned block is counted in ``rejected`` as
  ``reorg``. Logs are fetched by block range and kept only if their ``blockHash`` is the block
  fetched at that height, so a reorg between two requests cannot mix two forks.
- **Times.** A row is stamped with its block's timestamp plus a millisecond for each earlier
  block of the same second (several blocks a second on an L2 or a dev node), and the k-th
  transfer of a block k microseconds after the block: derived from the chain alone, so a
  restart finds the same times. Rows move forward per key: a retraction is stamped after the
  last row given, and a replacement block that would not be later than it is stamped just after.
- **Start and resume.** At the first start, ``warmup`` confirmed blocks are backfilled (the
  pipeline sets it to the detector's window when it is not given; none without one). With a
  checkpoint (``since``) the first block after it is found by binary search over heights and
  every block since is emitted: no gap and no duplicate across a restart.
- **Polite to the node.** Requests to one node (scheme, host, port of ``rpc_url``) are at
  least ``host_interval`` seconds apart, across every automation of the process pointing at
  it (the shared :class:`~signalmint.sources.hosts.HostGate` of the web sources): three
  automations on one provider key stay within one client's budget. A batch is one request.
  The ``User-Agent`` names the operator's site.
- **Errors never stop the stream.** A failed request is logged, counted in ``rejected`` by
  what went wrong, and retried with exponential backoff (``backoff`` seconds doubled per
  failure, at most 60 s): ``rpc_error`` (the node answered a JSON-RPC error object: a method
  it lacks, "header not found"...), ``rate_limited`` (HTTP 429, or a JSON-RPC error of code
  -32005 or saying "rate limit"; the wait is at least its ``Retry-After``), ``timeout`` (no
  answer within ``timeout``), ``unreachable`` (connection refused or reset, a name that does
  not resolve), ``http_error`` (another HTTP status) and ``bad_answer`` (not JSON-RPC: a
  proxy's HTML page, a missing answer in a batch, an unreadable block). These counts are the
  source's data health (the engine's ``signalmint_rows_rejected_total``, the checkpoint); a
  malformed log is counted as ``bad_value``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar, Self

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..records import Frame, Schema, to_datetime64
from .fetch import default_user_agent
from .hosts import HostGate, gate_for, host_of
from .validate import RowValidator

__all__ = ["TRANSFER_TOPIC", "EvmChain", "EvmOptions", "Token"]

log = logging.getLogger("signalmint.sources")

#: keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
MAX_BACKOFF = 60.0
BLOCK_KEY = "block"
METRICS = ("number", "gas_used", "base_fee", "tx_count", "amount", "retracted")
TEXTS = ("from", "to", "tx", "block_hash")
_MS, _US = 1_000_000, 1_000


class Token(BaseModel):
    """An ERC-20 contract watched for ``Transfer`` logs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="The token contract's address.")
    decimals: int = Field(18, ge=0, le=77, description="Decimals of the token (USDC 6, most 18).")


class EvmOptions(BaseModel):
    """Settings of the ``evm`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpc_url: str = Field(pattern=r"^https?://", description="The node's JSON-RPC address.")
    tokens: dict[str, Token] = Field(default_factory=dict, description="Symbol -> {address, decimals}.")
    blocks: bool = Field(True, description="Emit a row per block (key 'block').")
    confirmations: int = Field(12, ge=0, description="Depth a block must reach before its rows are emitted.")
    interval: float = Field(4.0, gt=0, description="Seconds between polls of the head.")
    warmup: int | None = Field(None, ge=0, description="Blocks backfilled at first start (None: detector's).")
    batch: int = Field(50, ge=1, le=1000, description="Blocks fetched per round.")
    history: int = Field(128, ge=1, description="Emitted blocks remembered to detect reorgs.")
    backoff: float = Field(1.0, gt=0, description="First retry delay in seconds (doubles, at most 60).")
    timeout: float = Field(10.0, gt=0, description="Seconds before a request is abandoned.")
    host_interval: float = Field(
        0.1, ge=0, description="Least seconds between two requests to the node (across automations)."
    )

    @field_validator("tokens")
    @classmethod
    def _symbols(cls, value: dict[str, Token]) -> dict[str, Token]:
        if BLOCK_KEY in value:
            raise ValueError(f"{BLOCK_KEY!r} is the key of block rows; name the token otherwise")
        return value

    @model_validator(mode="after")
    def _gives_rows(self) -> Self:
        if not self.blocks and not self.tokens:
            raise ValueError("nothing to emit: list tokens, or keep blocks: true")
        return self


class RpcError(Exception):
    """A JSON-RPC request that failed; ``reason`` is how it is counted (see the module doc)."""

    def __init__(self, reason: str, detail: str, retry_after: float = 0.0) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


#: JSON-RPC error codes that mean "slow down" (EIP-1474's "limit exceeded"; some providers send 429)
_RATE_CODES = frozenset({-32005, 429})


def _rpc_failure(method: str, error: Any) -> RpcError:
    """The :class:`RpcError` for a JSON-RPC error object."""
    code = error.get("code") if isinstance(error, dict) else None
    message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    text = f"{method}: {code} {message}"[:200] if code is not None else f"{method}: {message}"[:200]
    lowered = message.lower()
    if code in _RATE_CODES or "rate limit" in lowered or "too many requests" in lowered:
        return RpcError("rate_limited", text)
    return RpcError("rpc_error", text)


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), at most a minute."""
    if not value:
        return 0.0
    try:
        return min(max(float(value), 0.0), MAX_BACKOFF)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0
    return min(max(when - time.time(), 0.0), MAX_BACKOFF)


@dataclass(frozen=True, slots=True)
class _Emitted:
    number: int
    hash: str
    frame: Frame  # the rows emitted for the block, re-sent with retracted=1 if it is orphaned


def _int(value: Any) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not a hex quantity: {value!r}")
    return int(value, 16)


def _address(topic: Any) -> str:
    if not isinstance(topic, str) or len(topic) != 66:
        raise ValueError(f"not an address topic: {topic!r}")
    return "0x" + topic[-40:].lower()


def _readable(block: Any) -> bool:
    """A block answer with the fields the source reads."""
    try:
        for name in ("number", "timestamp", "gasUsed"):
            _int(block[name])
        return isinstance(block["hash"], str) and isinstance(block["parentHash"], str)
    except (KeyError, TypeError, ValueError):
        return False


def _gwei(wei: Any) -> float:
    """A wei quantity in gwei; NaN when absent (before London) or unreadable."""
    try:
        return _int(wei) / 1e9
    except ValueError:
        return float("nan")


def _log_index(entry: dict[str, Any]) -> int:
    try:
        return _int(entry.get("logIndex"))
    except ValueError:
        return 0


class EvmChain:
    """Confirmed blocks and token transfers of one chain, one frame per block."""

    kind: ClassVar[str] = "evm"
    Options: ClassVar[type[EvmOptions]] = EvmOptions
    schema: ClassVar[Schema] = {**dict.fromkeys(METRICS, "metric"), **dict.fromkeys(TEXTS, "text")}

    def __init__(
        self,
        rpc_url: str,
        tokens: Mapping[str, Token | Mapping[str, Any]] | None = None,
        blocks: bool = True,
        confirmations: int = 12,
        interval: float = 4.0,
        warmup: int | None = None,
        batch: int = 50,
        history: int = 128,
        backoff: float = 1.0,
        timeout: float = 10.0,
        host_interval: float = 0.1,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hosts: HostGate | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.tokens = {s: Token.model_validate(t) for s, t in (tokens or {}).items()}
        self.blocks, self.confirmations, self.interval = blocks, confirmations, interval
        self.warmup, self.batch, self.history = warmup, batch, history
        self.backoff, self.timeout, self.sleep = backoff, timeout, sleep
        self.host_interval = host_interval
        self.hosts = hosts if hosts is not None else gate_for(time.monotonic, sleep)
        self._host = host_of(rpc_url)
        self._by_address = {t.address.lower(): (s, t.decimals) for s, t in self.tokens.items()}
        self._rejected: Counter[str] = Counter()
        self.requests = 0
        self.reorgs = 0
        self.height = -1  # the newest block taken in (its rows emitted, if any): for health and tests
        self.user_agent: str | None = None  # the engine names the operator's site (sources.fetch)
        self._last_ns = 0  # the latest row time given, ns (rows move forward per key)
        self._prev: tuple[int, int] | None = None  # (number, timestamp) of the last block stamped
        self._first = 0  # the lowest height sharing that block's timestamp

    def __repr__(self) -> str:
        return f"EvmChain(rpc_url={self.rpc_url!r}, tokens={sorted(self.tokens)}, confirmations={self.confirmations})"

    @property
    def rejected(self) -> Mapping[str, int]:
        """Bad rows, failed requests (by kind) and orphaned blocks (``reorg``), by reason."""
        return MappingProxyType(self._rejected)

    # -- JSON-RPC ----------------------------------------------------------------

    async def _call(self, client: httpx.AsyncClient, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """The results of a batch of calls, in order; :class:`RpcError` if any failed."""
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        await self.hosts.turn(self._host, self.host_interval)
        self.requests += 1
        try:
            response = await client.post(self.rpc_url, json=body if len(body) > 1 else body[0])
        except httpx.TimeoutException as exc:
            raise RpcError("timeout", f"no answer within {self.timeout}s ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise RpcError("unreachable", f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        if response.status_code == 429:
            wait = _retry_after(response.headers.get("Retry-After"))
            raise RpcError("rate_limited", f"HTTP 429, Retry-After {wait:g}s", wait)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        answers = answer if isinstance(answer, list) else [answer]
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        if not by_id and isinstance(answer, dict) and "error" in answer:  # an error for the whole batch
            raise _rpc_failure(calls[0][0], answer["error"])
        out = []
        for i, (method, _) in enumerate(calls):
            one = by_id.get(i)
            if one is not None and "error" in one:
                raise _rpc_failure(method, one["error"])
            if one is None or "result" not in one:
                if response.status_code >= 400:
                    raise RpcError("http_error", f"{method}: HTTP {response.status_code}")
                kind = response.headers.get("Content-Type", "?")
                raise RpcError("bad_answer", f"{method}: not a JSON-RPC answer ({kind})")
            out.append(one["result"])
        return out

    async def _persist(self, client: httpx.AsyncClient, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """``_call`` until it succeeds, backing off between failures (counted as ``rpc_error``)."""
        failures = 0
        while True:
            try:
                return await self._call(client, calls)
            except RpcError as exc:
                failures += 1
                self._rejected[exc.reason] += 1
                log.warning("evm %s: request failed (%d in a row): %s", self.rpc_url, failures, exc)
                await self.sleep(max(exc.retry_after, min(self.backoff * 2 ** (failures - 1), MAX_BACKOFF)))

    async def _head(self, client: httpx.AsyncClient) -> int:
        return _int((await self._persist(client, [("eth_blockNumber", [])]))[0])

    async def _blocks(self, client: httpx.AsyncClient, first: int, last: int) -> list[dict[str, Any] | None]:
        calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(first, last + 1)]
        found: list[dict[str, Any] | None] = []
        for start in range(0, len(calls), self.batch):
            found += await self._persist(client, calls[start : start + self.batch])
        return found

    async def _first_at(self, client: httpx.AsyncClient, second: int, head: int) -> int:
        """The lowest height whose timestamp is at or after ``second`` (``head + 1`` if none)."""
        lo, hi = 0, head + 1
        while lo < hi:
            mid = (lo + hi) // 2
            block = (await self._blocks(client, mid, mid))[0]
            if block is not None and _int(block["timestamp"]) >= second:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # -- rows --------------------------------------------------------------------

    async def _stamp(self, client: httpx.AsyncClient, number: int, timestamp: int) -> int:
        """The ns time of a block's row: its timestamp plus a millisecond per earlier block of the
        same second (from the chain alone, so a restart finds the same times), never at or before
        the last row given (after a retraction)."""
        if self._prev is not None and self._prev[0] == number - 1 and self._prev[1] <= timestamp:
            first = self._first if self._prev[1] == timestamp else number
        else:  # the first block of the stream, or the first after a reorg
            first = await self._first_at(client, timestamp, number)
        self._prev, self._first = (number, timestamp), first
        stamp = max(timestamp * 1_000_000_000 + (number - first) * _MS, self._last_ns + _US)
        self._last_ns = stamp
        return stamp

    def _block_frame(self, block: dict[str, Any], logs: list[dict[str, Any]], stamp: int) -> Frame:
        number = _int(block["number"])
        rows: list[tuple[str, dict[str, float], dict[str, str | None]]] = []
        if self.blocks:
            base = block.get("baseFeePerGas")
            rows.append(
                (
                    BLOCK_KEY,
                    {
                        "gas_used": float(_int(block["gasUsed"])),
                        "base_fee": _gwei(base),
                        "tx_count": float(len(block.get("transactions") or [])),
                    },
                    {},
                )
            )
        for entry in logs:
            try:
                symbol, decimals = self._by_address[str(entry["address"]).lower()]
                topics = entry["topics"]
                amount = int(str(entry["data"])[2:66] or "0", 16) / 10**decimals
                texts: dict[str, str | None] = {
                    "from": _address(topics[1]),
                    "to": _address(topics[2]),
                    "tx": str(entry["transactionHash"]),
                }
            except (KeyError, IndexError, TypeError, ValueError):
                self._rejected["bad_value"] += 1  # e.g. an ERC-721 Transfer (4 topics) or a log without data
                continue
            if len(topics) != 3:
                self._rejected["bad_value"] += 1
                continue
            rows.append((symbol, {"amount": amount}, texts))
        n = len(rows)
        times = np.array([stamp + k * _US for k in range(n)], dtype=np.int64).view("datetime64[ns]")
        self._last_ns = max(self._last_ns, stamp + (n - 1) * _US)
        columns = {name: np.full(n, np.nan) for name in METRICS}
        columns["number"][:] = number
        columns["retracted"][:] = 0.0
        texts_out = {name: np.full(n, None, dtype=object) for name in TEXTS}
        texts_out["block_hash"][:] = str(block["hash"])
        for i, (_, metrics, texts) in enumerate(rows):
            for name, value in metrics.items():
                columns[name][i] = value
            for name, text in texts.items():
                texts_out[name][i] = text
        return Frame(keys=np.array([r[0] for r in rows], dtype=str), times=times, columns=columns, texts=texts_out)

    def _retraction(self, orphaned: list[_Emitted]) -> Frame:
        """The rows of the orphaned blocks again, flagged ``retracted``, stamped after the last row."""
        parts = [e.frame for e in orphaned if len(e.frame)]
        if not parts:  # blocks without rows (``blocks: false`` and no transfers): nothing to take back
            return Frame.empty(METRICS, TEXTS)
        n = sum(len(p) for p in parts)
        start = self._last_ns + _MS
        self._last_ns = start + max(n - 1, 0) * _US
        columns = {name: np.concatenate([p.columns[name] for p in parts]) for name in METRICS}
        columns["retracted"] = np.ones(n)
        return Frame(
            keys=np.concatenate([p.keys for p in parts]).astype(str),
            times=np.array([start + k * _US for k in range(n)], dtype=np.int64).view("datetime64[ns]"),
            columns=columns,
            texts={name: np.concatenate([p.texts[name] for p in parts]) for name in TEXTS},
        )

    # -- the stream --------------------------------------------------------------

    async def stream(self, since: datetime | None = None) -> AsyncGenerator[Frame, None]:
        """Backfill (or resume after ``since``), then one frame per confirmed block, forever."""
        validator = RowValidator(self._rejected, source=self.kind, schema=self.schema)
        self._last_ns, self._prev, self._first = 0, None, 0
        cutoff = int(to_datetime64(since).astype(np.int64)) if since is not None else None
        emitted: OrderedDict[int, _Emitted] = OrderedDict()
        addresses = sorted(self._by_address)
        async with httpx.AsyncClient(
            timeout=self.timeout, headers={"User-Agent": self.user_agent or default_user_agent()}
        ) as client:
            target = await self._head(client) - self.confirmations
            if since is not None:
                second = int(to_datetime64(since).astype("datetime64[s]").astype(np.int64))
                following = await self._first_at(client, second, max(target, -1))
            else:
                following = target + 1 - (self.warmup or 0)
            following = max(following, 0)
            try:
                while True:
                    head = await self._head(client)
                    target = head - self.confirmations
                    if emitted:
                        orphaned = await self._orphaned(client, emitted, head)
                        if orphaned:
                            following = orphaned[0].number
                            self.reorgs += 1
                            self._rejected["reorg"] += len(orphaned)
                            log.warning(
                                "evm %s: reorg, %d emitted block(s) from %d orphaned; their rows are retracted",
                                self.rpc_url, len(orphaned), following,
                            )  # fmt: skip
                            retraction = validator.check(self._retraction(orphaned))
                            if len(retraction):
                                yield retraction
                            continue
                    if following > target:
                        await self.sleep(self.interval)
                        continue
                    last = min(target, following + self.batch - 1)
                    fetched = await self._blocks(client, following, last)
                    logs = await self._logs(client, addresses, following, last) if addresses else []
                    chain = self._consistent(fetched, logs, emitted)
                    if chain is None:  # the node moved between our requests: ask again
                        await self.sleep(min(self.interval, self.backoff))
                        continue
                    for block, block_logs in chain:
                        number = _int(block["number"])
                        stamp = await self._stamp(client, number, _int(block["timestamp"]))
                        frame = self._block_frame(block, block_logs, stamp)
                        if cutoff is not None:
                            frame = frame.take(frame.times.view(np.int64) > cutoff)
                        frame = validator.check(frame)
                        emitted[number] = _Emitted(number, str(block["hash"]), frame)
                        while len(emitted) > self.history:
                            emitted.popitem(last=False)
                        following = number + 1
                        self.height = number
                        if len(frame):
                            yield frame
            finally:
                validator.flush()

    async def _logs(self, client: httpx.AsyncClient, addresses: list[str], first: int, last: int) -> list[Any]:
        query = {"fromBlock": hex(first), "toBlock": hex(last), "address": addresses, "topics": [TRANSFER_TOPIC]}
        found = (await self._persist(client, [("eth_getLogs", [query])]))[0]
        return found if isinstance(found, list) else []

    def _consistent(
        self, fetched: list[dict[str, Any] | None], logs: list[Any], emitted: OrderedDict[int, _Emitted]
    ) -> list[tuple[dict[str, Any], list[dict[str, Any]]]] | None:
        """Blocks with their logs, if they form one chain on top of what was emitted (else None)."""
        out: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        by_hash: dict[str, list[dict[str, Any]]] = {}
        for block in fetched:
            if block is None:
                return None
            if not _readable(block):
                self._rejected["bad_answer"] += 1
                log.warning("evm %s: an unreadable block: %s", self.rpc_url, str(block)[:200])
                return None
            number = _int(block["number"])
            parent = out[-1][0]["hash"] if out else (emitted[number - 1].hash if number - 1 in emitted else None)
            if parent is not None and block["parentHash"] != parent:
                return None  # a reorg under our feet: the next round's tip check sorts it out
            by_hash[str(block["hash"])] = []
            out.append((block, by_hash[str(block["hash"])]))
        for entry in logs:
            if not isinstance(entry, dict) or entry.get("removed"):
                continue
            kept = by_hash.get(str(entry.get("blockHash")))
            if kept is None:
                return None  # a log of another fork
            kept.append(entry)
        for _, kept in out:
            kept.sort(key=_log_index)
        return out

    async def _orphaned(
        self, client: httpx.AsyncClient, emitted: OrderedDict[int, _Emitted], head: int
    ) -> list[_Emitted]:
        """The emitted blocks no longer on the canonical chain, oldest first (empty: none)."""
        numbers = list(emitted)
        tip = numbers[-1]
        if tip <= head:
            block = (await self._blocks(client, tip, tip))[0]
            if block is not None and block["hash"] == emitted[tip].hash:
                return []
        # walk back to the common ancestor
        candidates = [n for n in numbers if n <= head]
        canonical = await self._blocks(client, candidates[0], candidates[-1]) if candidates else []
        hashes = {n: (b or {}).get("hash") for n, b in zip(candidates, canonical, strict=True)}
        orphaned = []
        for n in reversed(numbers):
            if hashes.get(n) == emitted[n].hash:
                break
            orphaned.append(emitted.pop(n))
        if not emitted:
            log.warning("evm %s: reorg deeper than the %d blocks remembered", self.rpc_url, self.history)
        return orphaned[::-1]
