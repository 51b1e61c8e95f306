"""The ``evm`` source against a real local node (ganache): blocks, token transfers, depth, reorgs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings
from signalmint.engine.runner import Engine, without_retractions
from signalmint.records import Frame, Scores, to_datetime
from signalmint.registry import Registry
from signalmint.sources.evm import EvmChain, EvmOptions
from signalmint.store import Database, load_checkpoint

from .evm_node import Node, evm_node

__all__ = ["evm_node"]

pytestmark = pytest.mark.timeout(60)


async def _next(stream: AsyncIterator[Frame], timeout: float = 5.0) -> Frame:
    return await asyncio.wait_for(anext(stream), timeout)


async def _nothing_within(stream: AsyncIterator[Frame], seconds: float) -> asyncio.Task[Frame]:
    """Start waiting for the next frame; assert none comes within ``seconds``; the waiting task."""
    task = asyncio.ensure_future(anext(stream))
    done, _ = await asyncio.wait({task}, timeout=seconds)
    assert not done, f"unexpected frame: {task.result() if done else None}"
    return task


async def _quiet_until(
    stream: AsyncIterator[Frame], ready: Callable[[], bool], within: float = 20
) -> asyncio.Task[Frame]:
    """Start waiting for the next frame; wait until ``ready()`` (no fixed window: a loaded machine
    only makes it slower); assert no frame came meanwhile; the waiting task."""
    task = asyncio.ensure_future(anext(stream))
    async with asyncio.timeout(within):
        while not ready():
            await asyncio.sleep(0.01)
    assert not task.done(), f"unexpected frame: {task.result() if task.done() else None}"
    return task


def _source(node: Node, **options: Any) -> EvmChain:
    options = {"interval": 0.02, "backoff": 0.02, "host_interval": 0, **options}
    return EvmChain(**EvmOptions(rpc_url=node.url, **options).model_dump())


@pytest.fixture(scope="module")
def tokens(evm_node: Node) -> dict[str, str]:
    return {name: evm_node.deploy_token() for name in ("USDC", "WETH", "OTHER")}


def test_blocks_carry_gas_used_base_fee_and_transaction_count(evm_node: Node, tokens: dict[str, str]) -> None:
    node = evm_node
    a = node.accounts
    node.transfer(tokens["OTHER"], a[1], a[2], 5)  # a block with one transaction
    node.mine(2)
    head = node.head()

    async def run() -> list[Frame]:
        stream = _source(node, confirmations=0, warmup=3).stream()
        try:
            return [await _next(stream) for _ in range(3)]
        finally:
            await stream.aclose()

    frames = asyncio.run(run())
    for frame, number in zip(frames, range(head - 2, head + 1), strict=True):
        block = node.block(number)
        assert frame.keys.tolist() == ["block"]
        assert frame.columns["number"][0] == number
        assert frame.columns["gas_used"][0] == int(block["gasUsed"], 16)
        assert frame.columns["base_fee"][0] == pytest.approx(int(block["baseFeePerGas"], 16) / 1e9)
        assert frame.columns["tx_count"][0] == len(block["transactions"])
        assert frame.texts["block_hash"][0] == block["hash"]
        assert frame.columns["retracted"][0] == 0
    assert [f.columns["tx_count"][0] for f in frames] == [1, 0, 0]
    assert frames[0].columns["gas_used"][0] > 21_000
    assert np.all(np.diff([f.times[0] for f in frames]).astype(np.int64) > 0)


def test_transfers_of_listed_tokens_in_token_units(evm_node: Node, tokens: dict[str, str]) -> None:
    node = evm_node
    a = node.accounts
    listed = {"USDC": {"address": tokens["USDC"], "decimals": 6}, "WETH": {"address": tokens["WETH"]}}
    node.rpc("miner_stop")  # three transfers in one block
    sent = [
        node.transfer(tokens["USDC"], a[1], a[2], 2_500_000_000),  # 2,500 USDC
        node.transfer(tokens["OTHER"], a[1], a[2], 10**24),  # not listed
        node.transfer(tokens["WETH"], a[3], a[4], 3 * 10**17),  # 0.3 WETH
    ]
    node.rpc("miner_start")
    node.mine(1)
    number = int(node.rpc("eth_getTransactionReceipt", sent[0])["blockNumber"], 16)
    assert number == node.head() - 1

    async def run() -> Frame:
        stream = _source(node, tokens=listed, confirmations=1, warmup=1).stream()
        try:
            return await _next(stream)
        finally:
            await stream.aclose()

    frame = asyncio.run(run())
    assert frame.columns["number"].tolist() == [number] * 3
    assert frame.keys.tolist() == ["block", "USDC", "WETH"]
    assert frame.columns["tx_count"][0] == 3
    assert frame.columns["amount"][1:].tolist() == [2500.0, 0.3]
    assert frame.texts["from"][1:].tolist() == [a[1], a[3]]
    assert frame.texts["to"][1:].tolist() == [a[2], a[4]]
    assert frame.texts["tx"][1:].tolist() == [sent[0], sent[2]]
    assert np.isnan(frame.columns["amount"][0]) and np.isnan(frame.columns["gas_used"][1:]).all()


def test_only_blocks_confirmations_deep_are_emitted(evm_node: Node) -> None:
    node = evm_node

    async def run() -> None:
        stream = _source(node, confirmations=3, warmup=1).stream()
        try:
            first = await _next(stream)
            assert first.columns["number"][0] == node.head() - 3
            waiting = await _nothing_within(stream, 0.3)  # the next block is only 2 deep
            node.mine(1)
            second = await asyncio.wait_for(waiting, 5)
            assert second.columns["number"][0] == node.head() - 3 == first.columns["number"][0] + 1
        finally:
            await stream.aclose()

    asyncio.run(run())


def test_a_reorg_retracts_the_orphaned_rows_before_the_replacement(evm_node: Node, tokens: dict[str, str]) -> None:
    node = evm_node
    a = node.accounts
    listed = {"USDC": {"address": tokens["USDC"], "decimals": 6}}
    node.mine(1)
    fork = node.head()
    snapshot = node.rpc("evm_snapshot")
    orphan_tx = node.transfer(tokens["USDC"], a[1], a[2], 7_000_000)  # block fork+1
    node.mine(1)  # fork+2
    orphaned = {n: node.block(n)["hash"] for n in (fork + 1, fork + 2)}
    source = _source(node, tokens=listed, confirmations=0, warmup=2)

    async def run() -> list[Frame]:
        stream = source.stream()
        try:
            seen = [await _next(stream), await _next(stream)]
            node.rpc("evm_revert", snapshot)  # back to the fork; then a different, longer chain
            node.transfer(tokens["USDC"], a[3], a[4], 9_000_000)
            node.mine(2)
            seen += [await _next(stream) for _ in range(4)]
            return seen
        finally:
            await stream.aclose()

    frames = asyncio.run(run())
    emitted, retraction, replacement = frames[:2], frames[2], frames[3:]
    assert [f.texts["block_hash"][0] for f in emitted] == list(orphaned.values())
    assert emitted[0].texts["tx"].tolist() == [None, orphan_tx]
    # the retraction comes first: every orphaned row again, flagged, later in time
    assert retraction.columns["retracted"].tolist() == [1.0, 1.0, 1.0]
    assert retraction.keys.tolist() == ["block", "USDC", "block"]
    assert retraction.texts["tx"][1] == orphan_tx and retraction.columns["amount"][1] == 7.0
    assert retraction.texts["block_hash"].tolist() == [orphaned[fork + 1]] * 2 + [orphaned[fork + 2]]
    assert retraction.times.min() > emitted[-1].times.max()
    # then the replacement blocks at the same heights, with new hashes
    numbers = [int(f.columns["number"][0]) for f in replacement]
    assert numbers == [fork + 1, fork + 2, fork + 3]
    assert replacement[0].texts["block_hash"][0] not in orphaned.values()
    assert replacement[0].columns["amount"][1] == 9.0 and not replacement[0].columns["retracted"].any()
    assert replacement[0].times.min() > retraction.times.max()
    assert source.rejected["reorg"] == 2 and source.reorgs == 1
    # and the engine hands the detector none of the retracted rows
    assert len(without_retractions(retraction)) == 0
    assert without_retractions(replacement[0]) is replacement[0]


def test_a_reorg_of_blocks_without_rows_retracts_nothing(evm_node: Node, tokens: dict[str, str]) -> None:
    node = evm_node
    a = node.accounts
    listed = {"USDC": {"address": tokens["USDC"], "decimals": 6}}
    node.mine(1)
    snapshot = node.rpc("evm_snapshot")
    node.mine(2)  # two empty blocks, emitted as nothing (transfers only)
    source = _source(node, tokens=listed, blocks=False, confirmations=0, warmup=2)
    head = node.head()

    async def run() -> Frame:
        stream = source.stream()
        try:
            waiting = await _quiet_until(stream, lambda: source.height >= head)  # both empty blocks taken in
            node.rpc("evm_revert", snapshot)  # (an empty block mined again in the same second has the same hash)
            replaced = node.transfer(tokens["USDC"], a[3], a[4], 4_000_000)
            node.mine(1)
            frame = await asyncio.wait_for(waiting, 5)
            assert frame.texts["tx"].tolist() == [replaced]
            return frame
        finally:
            await stream.aclose()

    frame = asyncio.run(run())
    assert frame.columns["amount"].tolist() == [4.0] and frame.keys.tolist() == ["USDC"]
    assert source.rejected["reorg"] == 2


def test_a_reorg_shallower_than_the_confirmations_is_never_seen(evm_node: Node, tokens: dict[str, str]) -> None:
    node = evm_node
    a = node.accounts
    listed = {"USDC": {"address": tokens["USDC"], "decimals": 6}}
    node.mine(1)
    fork = node.head()
    snapshot = node.rpc("evm_snapshot")
    node.transfer(tokens["USDC"], a[1], a[2], 1_000_000)  # fork+1, only 1 deep
    source = _source(node, tokens=listed, confirmations=2, warmup=1)

    async def run() -> list[Frame]:
        stream = source.stream()
        try:
            seen = [await _next(stream)]  # fork - 1: the newest block 2 deep
            waiting = await _nothing_within(stream, 0.2)  # the fork is 1 deep, fork + 1 is the head
            node.rpc("evm_revert", snapshot)
            replaced = node.transfer(tokens["USDC"], a[3], a[4], 2_000_000)
            node.mine(3)
            seen.append(await asyncio.wait_for(waiting, 5))
            seen += [await _next(stream)]
            assert seen[-1].texts["tx"][1] == replaced
            return seen
        finally:
            await stream.aclose()

    frames = asyncio.run(run())
    assert [int(f.columns["number"][0]) for f in frames] == [fork - 1, fork, fork + 1]
    assert not any(f.columns["retracted"].any() for f in frames)
    assert "reorg" not in source.rejected


def test_a_restart_resumes_after_the_checkpoint_without_gap_or_duplicate(evm_node: Node) -> None:
    node = evm_node
    node.mine(6)

    async def take(since: Any, count: int) -> list[Frame]:
        stream = _source(node, confirmations=0, warmup=6).stream(since)
        try:
            return [await _next(stream) for _ in range(count)]
        finally:
            await stream.aclose()

    first = asyncio.run(take(None, 6))
    checkpoint = to_datetime(first[2].times.max())
    resumed = asyncio.run(take(checkpoint, 3))
    assert [f.columns["number"][0] for f in resumed] == [f.columns["number"][0] for f in first[3:]]
    assert [f.times.tolist() for f in resumed] == [f.times.tolist() for f in first[3:]]


class _FlakyProxy:
    """Forwards JSON-RPC to the node, but while ``failing`` is set answers 500, or 200 with a body
    that is not JSON-RPC when ``junk`` is set too (and counts them). ``faults`` scripts the
    answers to the next requests, one each: a JSON-RPC error object (``rpc_error``), a 429 with
    ``Retry-After: 2`` (``http_429``), a JSON-RPC "limit exceeded" (``rpc_limit``), no answer
    within 2.5 s (``slow``). Each request's arrival (monotonic seconds) is kept."""

    def __init__(self, upstream: str) -> None:
        self.failing = threading.Event()
        self.junk = False
        self.failed = self.junked = 0
        self.agents: set[str] = set()
        self.faults: list[str] = []
        self.arrivals: list[float] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.arrivals.append(time.monotonic())
                proxy.agents.add(self.headers.get("User-Agent", ""))
                fault = proxy.faults.pop(0) if proxy.faults else None
                headers: dict[str, str] = {}
                if fault is not None:
                    status, answer, headers = _fault(fault, json.loads(body))
                elif proxy.failing.is_set():
                    proxy.failed += 1
                    proxy.junked += proxy.junk
                    status, answer = (200, b"<html>maintenance</html>") if proxy.junk else (500, b"trouble")
                else:
                    got = httpx.post(upstream, content=body, headers={"Content-Type": "application/json"})
                    status, answer = got.status_code, got.content
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _FlakyProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _fault(fault: str, request: Any) -> tuple[int, bytes, dict[str, str]]:
    """The scripted answer ``fault`` to a JSON-RPC request (one call or a batch)."""
    if fault == "http_429":
        return 429, b"slow down", {"Retry-After": "2"}
    if fault == "slow":
        time.sleep(2.5)  # the source's timeout is shorter
        return 500, b"late", {}
    error = {"code": -32000, "message": "header not found"}
    if fault == "rpc_limit":
        error = {"code": -32005, "message": "daily request count exceeded, request rate limited"}
    calls = request if isinstance(request, list) else [request]
    answers = [{"jsonrpc": "2.0", "id": c["id"], "error": error} for c in calls]
    return (
        200,
        json.dumps(answers if isinstance(request, list) else answers[0]).encode(),
        {"Content-Type": "application/json"},
    )


@pytest.fixture
def flaky(evm_node: Node) -> Iterator[_FlakyProxy]:
    with _FlakyProxy(evm_node.url) as proxy:
        yield proxy


def test_rpc_errors_are_counted_and_the_stream_recovers(evm_node: Node, flaky: _FlakyProxy) -> None:
    node = evm_node

    async def sleep(seconds: float) -> None:  # the backoff doubles per failure: real waits kept short
        await asyncio.sleep(min(seconds, 0.02))

    source = EvmChain(
        rpc_url=flaky.url, confirmations=0, warmup=1, interval=0.02, backoff=0.02, host_interval=0, sleep=sleep
    )

    async def run() -> list[Frame]:
        stream = source.stream()
        try:
            seen = [await _next(stream)]
            flaky.failing.set()
            node.mine(1)
            waiting = await _quiet_until(stream, lambda: flaky.failed >= 3)  # the node is unreachable via the proxy
            flaky.junk = True
            async with asyncio.timeout(5):
                while flaky.junked < 2:
                    await asyncio.sleep(0.01)
            assert not waiting.done()
            flaky.failing.clear()
            seen.append(await asyncio.wait_for(waiting, 5))
            return seen
        finally:
            await stream.aclose()

    frames = asyncio.run(run())
    assert frames[1].columns["number"][0] == frames[0].columns["number"][0] + 1
    # a 500 is an HTTP error, a proxy's HTML page no JSON-RPC answer: each failure counted once
    assert source.rejected["http_error"] + source.rejected["bad_answer"] == flaky.failed >= 3
    assert source.rejected["bad_answer"] == flaky.junked >= 2


def test_an_unreachable_node_is_retried_not_raised() -> None:
    source = EvmChain(rpc_url="http://127.0.0.1:9/", interval=0.01, backoff=0.01, timeout=1, host_interval=0)

    async def run() -> None:
        stream = source.stream()
        task = asyncio.ensure_future(anext(stream))
        done, _ = await asyncio.wait({task}, timeout=0.3)
        assert not done
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stream.aclose()

    asyncio.run(run())
    assert source.rejected["unreachable"] >= 3 and set(source.rejected) == {"unreachable"}


def test_options_are_checked() -> None:
    token = {"address": "0x" + "ab" * 20, "decimals": 6}
    with pytest.raises(ValidationError, match="key of block rows"):
        EvmOptions(rpc_url="http://127.0.0.1:8545", tokens={"block": token})
    with pytest.raises(ValidationError, match="address"):
        EvmOptions(rpc_url="http://127.0.0.1:8545", tokens={"USDC": {"address": "0x12"}})
    with pytest.raises(ValidationError, match="nothing to emit"):
        EvmOptions(rpc_url="http://127.0.0.1:8545", blocks=False)
    with pytest.raises(ValidationError, match="rpc_url"):
        EvmOptions(rpc_url="ftp://node")
    assert EvmOptions(rpc_url="http://127.0.0.1:8545", tokens={"USDC": token}).confirmations == 12


class _NoOptions(BaseModel):
    pass


class _Recorder:
    """A detector that flags nothing and keeps every frame it is given."""

    kind = "recorder"
    Options = _NoOptions
    seen: ClassVar[list[Frame]] = []

    def update(self, frame: Frame) -> Scores:
        self.seen.append(frame)
        n = len(frame)
        return Scores(keys=frame.keys, times=frame.times, score=np.zeros(n), flags=np.zeros(n, bool))


def test_the_engine_never_hands_retracted_rows_to_the_detector(
    evm_node: Node, tokens: dict[str, str], db: Database
) -> None:
    node = evm_node
    a = node.accounts
    registry = Registry.from_entry_points()  # its own: the session's registry stays as installed
    registry.detectors["recorder"] = _Recorder
    _Recorder.seen.clear()
    node.mine(1)
    snapshot = node.rpc("evm_snapshot")
    orphan_tx = node.transfer(tokens["USDC"], a[1], a[2], 7_000_000)
    source = {"kind": "evm", "rpc_url": node.url, "confirmations": 0, "warmup": 1, "interval": 0.02, "host_interval": 0}
    source["tokens"] = {"USDC": {"address": tokens["USDC"], "decimals": 6}}
    settings = Settings(
        database=db.url,
        automations=[
            AutomationConfig(
                name="chain", source=PluginConfig(**source), detector=DetectorConfig(kind="recorder"), retention=None
            )
        ],
    )

    def txs() -> list[str | None]:
        return [t for f in _Recorder.seen for t in f.texts["tx"].tolist() if t]

    async def until(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not done():
                await asyncio.sleep(0.01)

    async def run() -> None:
        engine = Engine(settings, db, registry)
        await engine.start()
        try:
            await until(lambda: txs() == [orphan_tx])
            node.rpc("evm_revert", snapshot)
            replaced = node.transfer(tokens["USDC"], a[3], a[4], 9_000_000)
            node.mine(1)
            await until(lambda: len(txs()) == 2)
            assert txs() == [orphan_tx, replaced]
        finally:
            await engine.stop()

    asyncio.run(run())
    assert not any(f.columns["retracted"].any() for f in _Recorder.seen)
    assert db.read_sync(load_checkpoint, "chain").rejected == {"reorg": 1}


def test_requests_name_the_operators_site(evm_node: Node, flaky: _FlakyProxy) -> None:
    """The engine sets ``user_agent`` from ``base_url`` (as for the web sources); every RPC carries it."""
    source = EvmChain(rpc_url=flaky.url, confirmations=0, warmup=1, interval=0.02, backoff=0.02, host_interval=0)
    source.user_agent = "signalmint/0.1 (+https://alerts.example.com)"

    async def run() -> None:
        stream = source.stream()
        try:
            await _next(stream)
        finally:
            await stream.aclose()

    asyncio.run(run())
    assert flaky.agents == {"signalmint/0.1 (+https://alerts.example.com)"}


def test_node_errors_are_counted_by_kind_and_a_429_waits_its_retry_after(evm_node: Node, flaky: _FlakyProxy) -> None:
    """A JSON-RPC error object, a JSON-RPC "limit exceeded", an HTTP 429 and a timeout: each
    counted under its own reason (the source's data health), the stream goes on."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # real waits kept short; the asked ones recorded
        waits.append(seconds)
        await asyncio.sleep(min(seconds, 0.02))

    source = EvmChain(
        rpc_url=flaky.url, confirmations=0, warmup=1, interval=0.02, backoff=0.02, timeout=1.0, host_interval=0,
        sleep=sleep,
    )  # fmt: skip
    flaky.faults = ["rpc_error", "rpc_limit", "http_429", "slow"]

    async def run() -> Frame:
        stream = source.stream()
        try:
            return await _next(stream, 10)
        finally:
            await stream.aclose()

    frame = asyncio.run(run())
    assert frame.keys.tolist() == ["block"]
    assert dict(source.rejected) == {"rpc_error": 1, "rate_limited": 2, "timeout": 1}
    assert waits[:4] == [0.02, 0.04, 2.0, 0.16]  # backoff doubles; the 429 waits its Retry-After


def test_automations_on_one_node_share_its_host_interval(evm_node: Node, flaky: _FlakyProxy) -> None:
    """Two sources on the real clock pointing at one node: every request to it, whichever source
    sends it, is ``host_interval`` after the previous one (the process's host gate)."""
    gap = 0.1

    async def run() -> None:
        sources = [EvmChain(rpc_url=flaky.url, confirmations=0, warmup=1, interval=0.01, host_interval=gap)
                   for _ in range(2)]  # fmt: skip
        streams = [s.stream() for s in sources]
        tasks = [asyncio.ensure_future(anext(s)) for s in streams]
        try:
            async with asyncio.timeout(10):
                while len(flaky.arrivals) < 8:
                    await asyncio.sleep(0.01)
        finally:
            for task in tasks:
                task.cancel()
            for stream in streams:
                with contextlib.suppress(BaseException):
                    await stream.aclose()
        assert all(s.requests >= 2 for s in sources)

    asyncio.run(run())
    # measured where they arrive, so the first (a new connection, a new server thread) may come
    # late and shorten one gap: the span of the seven after it is what the gate decides (each
    # source alone: 10 ms apart; unshared: two requests a gap)
    arrivals = flaky.arrivals[1:8]
    assert arrivals[-1] - arrivals[0] > 6 * gap * 0.9, arrivals
    assert statistics.median(b - a for a, b in itertools.pairwise(arrivals)) > gap * 0.9
