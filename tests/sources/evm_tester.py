"""A real EVM behind a real JSON-RPC HTTP endpoint, for when ganache cannot run: eth-tester.

eth-tester (MIT, with py-evm: the Python Ethereum implementation) keeps a chain in memory and
executes real EVM bytecode; this module serves it over HTTP on a loopback port, speaking the
JSON-RPC the ``evm`` source and the tests' :class:`~tests.sources.evm_node.Node` use:
``eth_chainId``, ``eth_accounts``, ``eth_blockNumber``, ``eth_getBlockByNumber``,
``eth_getLogs``, ``eth_sendTransaction``, ``eth_getTransactionReceipt``, geth's
``miner_stop``/``miner_start`` and ganache's ``evm_mine``, ``evm_snapshot`` and ``evm_revert``
(a reorg). Batches are answered as a node
answers them; an unknown method gets JSON-RPC error -32601, bad parameters -32602.

Every transaction mines its own block (like ganache's instamine). eth-tester is imported
here only, when the fixture needs it (importing it takes about a second of CPU), never at
collection.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAIN_ID = 1337
#: Transaction quantities: JSON-RPC name -> eth-tester's.
_QUANTITIES = {
    "gas": "gas",
    "value": "value",
    "nonce": "nonce",
    "gasPrice": "gas_price",
    "maxFeePerGas": "max_fee_per_gas",
    "maxPriorityFeePerGas": "max_priority_fee_per_gas",
}


def _hex(value: Any) -> Any:
    return hex(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _block(raw: dict[str, Any]) -> dict[str, Any]:
    """An eth-tester block in the JSON-RPC shape (camelCase keys, hex quantities)."""
    names = {
        "number": "number",
        "hash": "hash",
        "parent_hash": "parentHash",
        "timestamp": "timestamp",
        "gas_used": "gasUsed",
        "gas_limit": "gasLimit",
        "base_fee_per_gas": "baseFeePerGas",
        "miner": "miner",
        "coinbase": "miner",
        "state_root": "stateRoot",
        "transactions_root": "transactionsRoot",
        "receipts_root": "receiptsRoot",
        "logs_bloom": "logsBloom",
        "extra_data": "extraData",
        "size": "size",
        "nonce": "nonce",
        "difficulty": "difficulty",
        "mix_hash": "mixHash",
    }
    out = {rpc: _hex(raw[name]) for name, rpc in names.items() if name in raw}
    out["transactions"] = [t if isinstance(t, str) else t["hash"] for t in raw.get("transactions", [])]
    out["uncles"] = list(raw.get("uncles", []))
    return out


def _log(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": raw["address"].lower(),
        "topics": list(raw["topics"]),
        "data": raw["data"],
        "blockNumber": _hex(raw["block_number"]),
        "blockHash": raw["block_hash"],
        "transactionHash": raw["transaction_hash"],
        "transactionIndex": _hex(raw["transaction_index"]),
        "logIndex": _hex(raw["log_index"]),
        "removed": False,
    }


class TesterChain:
    """eth-tester's in-memory chain answering JSON-RPC calls (one at a time: it is not thread-safe)."""

    def __init__(self) -> None:
        from eth_tester import EthereumTester, PyEVMBackend  # type: ignore[import-untyped]  # lazily: ~1 s
        from eth_tester.exceptions import BlockNotFound, TransactionNotFound  # type: ignore[import-untyped]
        from eth_utils.address import to_checksum_address

        self.tester = EthereumTester(backend=PyEVMBackend())
        self.checksum = to_checksum_address
        self.not_found = (BlockNotFound, TransactionNotFound)
        self.lock = threading.Lock()
        self.stopped = False  # miner_stop: transactions wait in the pending block
        self.methods: dict[str, Callable[..., Any]] = {
            "eth_chainId": lambda: hex(CHAIN_ID),
            "net_version": lambda: str(CHAIN_ID),
            "eth_accounts": lambda: [a.lower() for a in self.tester.get_accounts()],  # as nodes answer
            "eth_blockNumber": lambda: hex(self.tester.get_block_by_number("latest")["number"]),
            "eth_getBlockByNumber": self._get_block,
            "eth_getLogs": self._get_logs,
            "eth_sendTransaction": self._send,
            "eth_getTransactionReceipt": self._receipt,
            "evm_mine": self._mine,
            "evm_snapshot": lambda: hex(self.tester.take_snapshot()),
            "evm_revert": lambda snapshot: self.tester.revert_to_snapshot(int(snapshot, 16)) or True,
            "miner_stop": self._miner_stop,
            "miner_start": self._miner_start,
        }

    def _get_block(self, number: str, full: bool = False) -> dict[str, Any] | None:
        at: str | int = number if number in ("latest", "earliest", "pending", "safe", "finalized") else int(number, 16)
        try:
            return _block(self.tester.get_block_by_number(at, full_transactions=full))
        except self.not_found:
            return None

    def _block_number(self, value: Any, default: str) -> int | str:
        value = default if value is None else value
        return value if value in ("latest", "earliest", "pending") else int(value, 16)

    def _get_logs(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        address = query.get("address")
        if isinstance(address, str):
            address = [address]
        at = {"from_block": self._block_number(query.get("fromBlock"), "latest")}
        at["to_block"] = self._block_number(query.get("toBlock"), "latest")
        addresses = [self.checksum(a) for a in address] if address else None
        found = self.tester.create_log_filter(**at, address=addresses, topics=query.get("topics"))
        try:
            return [_log(entry) for entry in self.tester.get_all_filter_logs(found)]
        finally:
            self.tester.delete_filter(found)

    def _send(self, tx: dict[str, Any]) -> str:
        out: dict[str, Any] = {}
        for name, value in tx.items():
            if name in _QUANTITIES:
                out[_QUANTITIES[name]] = int(value, 16)
            elif name in ("from", "to"):
                out[name] = self.checksum(value)
            else:
                out[name] = value
        if self.stopped:
            # eth-tester's own "no auto-mining" mode validates each transaction against the last
            # block, so a sender's second one (nonce + 1) is refused: put it in the pending block
            # (which the next mined block takes), as a node does
            out.setdefault("nonce", self.tester.get_nonce(out["from"], "pending"))
            return str(self.tester._add_transaction_to_pending_block(out))
        return str(self.tester.send_transaction(out))

    def _miner_stop(self) -> bool:
        self.stopped = True
        return True

    def _miner_start(self) -> bool:
        if self.stopped:
            self.stopped = False
            self.tester.mine_blocks(1)  # what waits, in one block
        return True

    def _mine(self) -> str:
        self.tester.mine_blocks(1)
        return "0x0"

    def _receipt(self, tx: str) -> dict[str, Any] | None:
        try:
            raw = self.tester.get_transaction_receipt(tx)
        except self.not_found:
            return None
        return {
            "transactionHash": raw["transaction_hash"],
            "blockHash": raw["block_hash"],
            "blockNumber": _hex(raw["block_number"]),
            "contractAddress": (raw["contract_address"] or "").lower() or None,
            "gasUsed": _hex(raw["gas_used"]),
            "status": _hex(raw["status"]),
            "logs": [_log(entry) for entry in raw["logs"]],
        }

    def answer(self, call: Any) -> dict[str, Any]:
        """The JSON-RPC answer to one call."""
        ident = call.get("id") if isinstance(call, dict) else None
        name = call.get("method") if isinstance(call, dict) else None
        method = self.methods.get(name) if isinstance(name, str) else None
        if method is None:
            error = {"code": -32601, "message": f"the method {call.get('method')!r} does not exist"}
            return {"jsonrpc": "2.0", "id": ident, "error": error}
        try:
            with self.lock:
                result = method(*call.get("params", []))
        except (TypeError, ValueError, KeyError) as exc:
            return {"jsonrpc": "2.0", "id": ident, "error": {"code": -32602, "message": str(exc)[:200]}}
        except Exception as exc:  # what the EVM refused (a bad transaction): the node's error, not a crash
            return {"jsonrpc": "2.0", "id": ident, "error": {"code": -32000, "message": str(exc)[:200]}}
        return {"jsonrpc": "2.0", "id": ident, "result": result}


def serve(chain: TesterChain) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server on a free loopback port answering JSON-RPC from ``chain``, serving in a thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except ValueError:
                answer: Any = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            else:
                answer = [chain.answer(c) for c in request] if isinstance(request, list) else chain.answer(request)
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
