"""Screenshots of one signal page per niche for the README: ``uv run python docs/shoot_niches.py``.

Seeds a fresh SQLite database with one realistic signal per niche (the payloads the real
detectors write), serves the app on a free loopback port and takes each signal page with
headless Chromium (``/usr/bin/chromium``) into ``docs/niche-NAME.png``.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn

from signalmint.config import Settings
from signalmint.records import Automation, Signal
from signalmint.store import Database, append_signals, sync_automations
from signalmint.store.migrate import migrate
from signalmint.web.app import create_app

DOCS = Path(__file__).resolve().parent
WHEN = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)

NICHES: list[tuple[Automation, Signal]] = [
    (
        Automation("shop-price-drop", "Shops · price drops", "Products whose price falls by 10% or more.",
                   "web_page", "price_drop", {"pct": 10}),
        Signal("shop-price-drop", "https://shop.example.com/products/burr-grinder", WHEN, "price_drop", 22.0,
               {"price": 147.42, "previous": 189.0, "drop": 41.58, "drop_pct": 22.0,
                "title": "Burr coffee grinder E65", "url": "https://shop.example.com/products/burr-grinder"}),
    ),
    (
        Automation("back-in-stock", "Shops · back in stock", "Sold-out products the moment they come back.",
                   "web_page", "restock", {}),
        Signal("back-in-stock", "https://shop.example.com/products/handheld-console", WHEN, "restock", 1.0,
               {"in_stock": 1.0, "previous": 0.0, "price": 349.0, "title": "Handheld console, 1 TB",
                "url": "https://shop.example.com/products/handheld-console"}),
    ),
    (
        Automation("rss-keyword", "News · keyword alerts", "New articles that mention your keywords.",
                   "rss", "new_item", {"match": ["python", "security"]}),
        Signal("rss-keyword", "https://blog.python.org/#post-3141", WHEN, "new_item", 1.0,
               {"new": 1.0, "matches": 1.0, "matched": ["python"],
                "title": "Python 3.15.0 release candidate 1 is out",
                "url": "https://blog.python.org/2026/12/python-3150rc1.html",
                "text": "The first release candidate of Python 3.15 is available: please test your projects.",
                "feed": "https://blog.python.org/feeds/posts/default"}),
    ),
    (
        Automation("github-trending", "GitHub · star velocity", "New repositories whose stars jump by 25% a day.",
                   "http_json", "pct_move", {"column": "stars", "pct": 25}),
        Signal("github-trending", "acme/tiny-agents", WHEN, "pct_move", 61.8,
               {"value": 4212.0, "base": 2603.0, "change_pct": 61.8, "title": "acme/tiny-agents",
                "url": "https://github.com/acme/tiny-agents"}),
    ),
    (
        Automation("seo-rank-change", "SEO · rank changes", "Your Google position per keyword, checked daily.",
                   "http_json", "pct_move", {"column": "rank", "pct": 30}),
        Signal("seo-rank-change", "best pour over kettle", WHEN, "pct_move", 75.0,
               {"value": 7.0, "base": 4.0, "change_pct": 75.0, "title": "best pour over kettle",
                "url": "https://example.com/guides/pour-over-kettles"}),
    ),
    (
        Automation("whale-transfers", "Ethereum · whale transfers", "USDC and USDT transfers of $1M or more.",
                   "evm", "threshold", {"column": "amount", "level": 1000000}),
        Signal("whale-transfers", "USDC", WHEN, "threshold", 24000000.0,
               {"value": 25000000.0, "previous": 1520.5, "level": 1000000.0,
                "from": "0x28c6c06298d514db089934071355e5743bf21d60",
                "to": "0x21a31ee1afc51d94c2efccaa2092ad1028285549",
                "tx": "0x9f1c4e0b6a2d3f5e7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"}),
    ),
    (
        Automation("gas-spike", "Ethereum · gas spikes", "Blocks whose base fee breaks out of its range.",
                   "evm", "anomaly", {"column": "base_fee"}),
        Signal("gas-spike", "block", WHEN, "anomaly", 0.9994,
               {"value": 84.2, "baseline": 11.7, "z": 9.3, "cusum": 7.1, "variance": 60.8,
                "nonconformity": 9.3, "history": 256}),
    ),
    (
        Automation("webhook-metric", "Metrics · anomalies", "Unusual values in the metrics your systems push.",
                   "push", "anomaly", {"column": "value"}),
        Signal("webhook-metric", "checkout-errors", WHEN, "anomaly", 0.9991,
               {"value": 148.0, "baseline": 12.4, "z": 7.8, "cusum": 6.2, "variance": 301.5,
                "nonconformity": 7.8, "history": 180, "title": "Checkout errors per 5 minutes"}),
    ),
]  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/niches.db")
        migrate(db)
        db.write_sync(sync_automations, [a for a, _ in NICHES], datetime.now(UTC))
        ids = {}
        for automation, signal in NICHES:
            for i in range(3):  # a short history on the key, for the "recent" list
                earlier = Signal(signal.automation, signal.key, signal.time - timedelta(days=3 - i),
                                 signal.kind, signal.score, signal.payload)  # fmt: skip
                (stored,) = db.write_sync(append_signals, automation.name, [earlier], datetime.now(UTC))
            ids[automation.name] = stored.id
        app = create_app(Settings(database=db.url, web={"title": "signalmint"}), db)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        for name, sid in ids.items():
            url = f"http://127.0.0.1:{port}/signals/{sid}"
            assert httpx.get(url).status_code == 200, url
            out = DOCS / f"niche-{name}.png"
            subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--hide-scrollbars", "--window-size=1280,900", f"--screenshot={out}", url],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            print(out.name, out.stat().st_size)
        server.should_exit = True
        db.close()


if __name__ == "__main__":
    main()
