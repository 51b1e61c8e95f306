"""A real local Ethereum node for the ``evm`` source's tests: ganache from npm, else eth-tester.

``.ci/run`` installs ganache into ``.ci/node`` (``npm install --prefix .ci/node ganache@7``);
the fixture starts it on a free loopback port in instamine mode (every transaction mines its
own block, ``evm_mine`` mines an empty one) and the tests force reorgs with
``evm_snapshot``/``evm_revert``. Where ganache cannot run (no node, not installed, does not
start), the same tests run against eth-tester's in-memory EVM (py-evm, a dev dependency)
served over real JSON-RPC HTTP (:mod:`.evm_tester`); only without both are they skipped,
saying why. ``SIGNALMINT_EVM_NODE=ganache`` or ``=eth-tester`` picks one (default ``auto``).

Transfers come from a token contract hand-written in EVM bytecode (no compiler needed):
called with ``(address to, uint256 amount)`` it emits ``Transfer(msg.sender, to, amount)``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from signalmint.sources.evm import TRANSFER_TOPIC

ROOT = Path(__file__).resolve().parents[2]
GANACHE = Path(os.environ.get("SIGNALMINT_GANACHE", ROOT / ".ci" / "node" / "node_modules" / ".bin" / "ganache"))

# runtime: mstore(0, calldataload(32)); log3(0, 32, TRANSFER, caller, calldataload(0)); stop
_RUNTIME = "602035600052" + "600035" + "33" + "7f" + TRANSFER_TOPIC[2:] + "6020" + "6000" + "a3" + "00"
_INIT = "6031600c60003960316000f3"  # codecopy(0, 12, 49); return(0, 49)
TOKEN_CODE = "0x" + _INIT + _RUNTIME
assert len(_RUNTIME) // 2 == 0x31


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """A running ganache and a small JSON-RPC client for the tests to drive it."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=10)
        self.accounts: list[str] = []

    def start(self) -> None:
        args = [str(GANACHE), "--chain.chainId", "1337", "--wallet.deterministic", "--miner.blockTime", "0"]
        args += ["--server.host", "127.0.0.1", "--server.port", str(self.port), "--logging.quiet"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.accounts = self.rpc("eth_accounts")
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("ganache did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def rpc(self, method: str, *params: Any) -> Any:
        answer = self.http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        body = answer.json()
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block(self, number: int) -> dict[str, Any]:
        found: dict[str, Any] = self.rpc("eth_getBlockByNumber", hex(number), False)
        return found

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.rpc("evm_mine")

    def send(self, sender: str, to: str | None, data: str) -> str:
        tx: dict[str, Any] = {"from": sender, "data": data, "gas": hex(200_000)}
        if to is not None:
            tx["to"] = to
        return str(self.rpc("eth_sendTransaction", tx))

    def deploy_token(self) -> str:
        tx = self.send(self.accounts[0], None, TOKEN_CODE)
        return str(self.rpc("eth_getTransactionReceipt", tx)["contractAddress"])

    def transfer(self, token: str, sender: str, to: str, raw_amount: int) -> str:
        """A transaction calling the token, which logs ``Transfer(sender, to, raw_amount)``."""
        data = "0x" + to[2:].lower().rjust(64, "0") + f"{raw_amount:064x}"
        return self.send(sender, token, data)


class TesterNode(Node):
    """The same JSON-RPC, served from eth-tester's in-memory EVM in this process."""

    def __init__(self) -> None:
        super().__init__()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        from .evm_tester import TesterChain, serve  # eth-tester is imported only now

        self.server, self.url = serve(TesterChain())
        self.accounts = self.rpc("eth_accounts")

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _ganache() -> Node | str:
    """A started ganache, or why there is none."""
    if shutil.which("node") is None:
        return "node is not installed (.ci/run installs ganache when npm is there)"
    if not GANACHE.exists():
        return f"ganache is not installed at {GANACHE} (`npm install --prefix .ci/node ganache@7.9.2`)"
    node = Node()
    try:
        node.start()
    except RuntimeError as exc:
        return f"ganache could not start: {exc}"
    return node


def _eth_tester() -> Node | str:
    """eth-tester served over JSON-RPC, or why there is none."""
    try:
        node = TesterNode()
        node.start()
    except ImportError as exc:
        return f"eth-tester is not installed ({exc}; `uv sync` installs the dev dependencies)"
    return node


def start_node() -> Node:
    """ganache if it runs, else eth-tester; a skip naming both reasons when neither can."""
    choice = os.environ.get("SIGNALMINT_EVM_NODE", "auto")
    reasons = []
    for name, start in (("ganache", _ganache), ("eth-tester", _eth_tester)):
        if choice not in ("auto", name):
            continue
        found = start()
        if isinstance(found, Node):
            return found
        reasons.append(found)
    pytest.skip("no local EVM for the evm tests: " + "; ".join(reasons))


@pytest.fixture(scope="module")
def evm_node() -> Iterator[Node]:
    node = start_node()
    try:
        yield node
    finally:
        node.stop()
        node.http.close()
