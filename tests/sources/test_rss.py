"""The ``rss`` source against a real local HTTP server serving RSS 2.0 and Atom feeds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings
from signalmint.engine.runner import Engine
from signalmint.records import Frame
from signalmint.registry import Registry
from signalmint.sources.rss import Rss, RssOptions
from signalmint.store import Database
from tests.conftest import first_signals

from .web_server import Reply, Site, VirtualTime, run_until

LAST_MODIFIED = "Thu, 01 Jan 2026 08:00:00 GMT"


def rss2(*items: tuple[str, str, str]) -> str:
    """An RSS 2.0 document; each item (guid, title, pubDate)."""
    body = "".join(
        f"""<item>
      <title>{title}</title>
      <link>https://blog.example.com/posts/{guid}</link>
      <guid isPermaLink="false">{guid}</guid>
      <pubDate>{date}</pubDate>
      <description>&lt;p&gt;About &lt;b&gt;{title}&lt;/b&gt;&amp;nbsp;in depth.&lt;/p&gt;</description>
    </item>"""
        for guid, title, date in items
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">
  <channel>
    <title>Example engineering blog</title>
    <link>https://blog.example.com/</link>
    <description>Posts</description>
    <atom:link href="https://blog.example.com/feed.xml" rel="self" type="application/rss+xml"/>
    {body}
  </channel>
</rss>"""


RSS_EXTRAS = rss2(("post-1", "Python 3.14 released", "Thu, 01 Jan 2026 07:00:00 +0000")).replace(
    "</channel>",
    """<item><title>No guid here</title><link>https://blog.example.com/posts/no-guid</link>
      <pubDate>Thu, 01 Jan 2026 06:00:00 GMT</pubDate></item>
    <item><title>Undated and linkless</title><description>plain</description></item>
    <item><title>From the future</title><guid>urn:uuid:future-1</guid>
      <pubDate>Fri, 01 Jan 2027 00:00:00 GMT</pubDate></item>
  </channel>""",
)

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Release notes</title>
  <link href="https://example.org/"/>
  <updated>2026-01-01T05:00:00Z</updated>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <entry>
    <title type="html">Rust &lt;em&gt;2.0&lt;/em&gt; plans</title>
    <link rel="alternate" href="https://example.org/2026/rust"/>
    <id>tag:example.org,2026:rust</id>
    <updated>2026-01-01T05:00:00Z</updated>
    <content type="html">&lt;p&gt;The plans for Rust 2.0.&lt;/p&gt;</content>
  </entry>
  <entry>
    <title>Only updated</title>
    <link href="https://example.org/2026/updated"/>
    <id>tag:example.org,2026:updated</id>
    <published>2026-01-01T03:00:00Z</published>
    <updated>2026-01-01T04:00:00Z</updated>
    <summary>A summary.</summary>
  </entry>
</feed>"""


def source(urls: list[str], time: VirtualTime, **options: Any) -> Rss:
    settings: dict[str, Any] = {"interval": 60, "host_interval": 0, "allow_private": True, "backoff": 1} | options
    validated = RssOptions.model_validate({"urls": urls, **settings})
    return Rss(**validated.model_dump(), clock=time.clock, sleep=time.sleep)


def rows(frames: list[Frame]) -> dict[str, dict[str, Any]]:
    out = {}
    for frame in frames:
        for i, key in enumerate(frame.keys.tolist()):
            out[key] = {name: frame.texts[name][i] for name in frame.texts} | {"time": frame.times[i]}
    return out


def at(text: str) -> np.datetime64:
    return np.datetime64(text, "ns")


def test_rss2_and_atom_entries_become_text_rows_with_stable_ids() -> None:
    async def main() -> list[Frame]:
        time = VirtualTime()
        async with Site(time) as site:
            urls = [site.serve("/feed.xml", Reply(RSS_EXTRAS)), site.serve("/atom", Reply(ATOM))]
            return await run_until(source(urls, time), time, lambda frames: len(frames) >= 1)

    frames = asyncio.run(main())
    assert len(frames) == 1
    got = rows(frames)
    feed = next(v["feed"] for v in got.values() if v["feed"].endswith("/feed.xml"))
    post = got[f"{feed}#post-1"]  # a bare guid is prefixed with its feed's url
    assert post["title"] == "Python 3.14 released"
    assert post["url"] == "https://blog.example.com/posts/post-1"
    assert post["text"] == "About Python 3.14 released in depth."
    assert post["time"] == at("2026-01-01T07:00")
    assert got["https://blog.example.com/posts/no-guid"]["time"] == at("2026-01-01T06:00")  # no guid: the link
    undated = [k for k, v in got.items() if v["title"] == "Undated and linkless"]
    assert len(undated) == 1 and undated[0].startswith(f"{feed}#")  # a hash of title and link
    assert got[undated[0]]["time"] == at("2026-01-02T00:00") and got[undated[0]]["url"] is None  # the poll time
    assert got["urn:uuid:future-1"]["time"] == at("2026-01-02T00:00")  # clamped to the poll time
    rust = got["tag:example.org,2026:rust"]
    assert (rust["title"], rust["url"], rust["text"]) == (
        "Rust 2.0 plans",
        "https://example.org/2026/rust",
        "The plans for Rust 2.0.",
    )
    assert rust["time"] == at("2026-01-01T05:00") and rust["feed"].endswith("/atom")
    assert got["tag:example.org,2026:updated"]["time"] == at("2026-01-01T03:00")  # published before updated


def test_conditional_get_sends_the_validators_and_a_304_yields_nothing() -> None:
    first = rss2(("a", "First", "Thu, 01 Jan 2026 07:00:00 GMT"))
    second = rss2(("a", "First", "Thu, 01 Jan 2026 07:00:00 GMT"), ("b", "Second", "Thu, 01 Jan 2026 09:00:00 GMT"))

    async def main() -> tuple[list[Frame], Site]:
        time = VirtualTime()
        async with Site(time) as site:
            url = site.serve(
                "/feed.xml",
                Reply(first, etag='"v1"', last_modified=LAST_MODIFIED),
                Reply(first, etag='"v1"', last_modified=LAST_MODIFIED),  # the same: answered 304
                Reply(second, etag='"v2"'),
            )
            frames = await run_until(source([url], time), time, lambda frames: len(site.requests) >= 4)
            return frames, site

    frames, site = asyncio.run(main())
    hits = site.requests
    assert "If-None-Match" not in hits[0].headers
    assert hits[1].headers["If-None-Match"] == '"v1"' and hits[1].headers["If-Modified-Since"] == LAST_MODIFIED
    assert hits[2].headers["If-None-Match"] == '"v1"'  # after a 304 the validators are kept
    assert hits[3].headers["If-None-Match"] == '"v2"'
    assert [sorted(f.keys.tolist()) for f in frames] == [[f"{site.base}/feed.xml#a"], [f"{site.base}/feed.xml#b"]]


def test_a_500_is_retried_with_backoff_and_the_poll_recovers() -> None:
    good = rss2(("a", "First", "Thu, 01 Jan 2026 07:00:00 GMT"))

    async def main() -> tuple[list[Frame], Rss, VirtualTime, Site]:
        time = VirtualTime()
        async with Site(time) as site:
            url = site.serve("/feed.xml", Reply("oops", status=500), Reply("oops", status=503), Reply(good))
            rss = source([url], time, retries=3, backoff=2)
            frames = await run_until(rss, time, lambda frames: len(frames) >= 1)
            return frames, rss, time, site

    frames, rss, time, site = asyncio.run(main())
    assert len(frames) == 1 and len(frames[0]) == 1
    assert rss.rejected["http_error"] == 2
    assert time.sleeps[:2] == [2.0, 4.0]  # backoff doubles
    assert [r.at - site.requests[0].at for r in site.requests] == [0.0, 2.0, 6.0]


def test_a_feed_failing_every_retry_is_asked_again_at_the_next_poll() -> None:
    good = rss2(("a", "First", "Thu, 01 Jan 2026 07:00:00 GMT"))

    async def main() -> tuple[list[Frame], Rss]:
        time = VirtualTime()
        async with Site(time) as site:
            url = site.serve("/feed.xml", *[Reply("down", status=502)] * 2, Reply(good))
            rss = source([url], time, retries=1, backoff=1)
            return await run_until(rss, time, lambda frames: len(frames) >= 1), rss

    frames, rss = asyncio.run(main())
    assert len(frames) == 1 and rss.rejected["http_error"] == 2


def test_a_malformed_feed_is_counted_and_the_stream_goes_on() -> None:
    good = rss2(("a", "First", "Thu, 01 Jan 2026 07:00:00 GMT"))

    async def main() -> tuple[list[Frame], Rss]:
        time = VirtualTime()
        async with Site(time) as site:
            url = site.serve(
                "/feed.xml", Reply("<html><body>Gateway <b>maintenance</b", content_type="text/html"), Reply(good)
            )
            rss = source([url], time)
            return await run_until(rss, time, lambda frames: len(frames) >= 1), rss

    frames, rss = asyncio.run(main())
    assert rss.rejected == {"malformed": 1}
    assert len(frames) == 1


def test_the_user_agent_names_the_operator_and_requests_to_one_host_are_spaced() -> None:
    async def main() -> tuple[Site, Rss, VirtualTime]:
        time = VirtualTime()
        async with Site(time) as site:
            urls = [site.serve("/a.xml", Reply(rss2())), site.serve("/b.xml", Reply(rss2()))]
            rss = source(urls, time, host_interval=5, user_agent="signalmint (+https://alerts.example.com)")
            await run_until(rss, time, lambda frames: len(site.requests) >= 4)
            return site, rss, time

    site, rss, time = asyncio.run(main())
    assert {r.headers["User-Agent"] for r in site.requests} == {"signalmint (+https://alerts.example.com)"}
    # the second URL of the host waits its 5 s turn; the rest of the 60 s interval follows
    assert time.sleeps[:3] == [5.0, 55.0, 5.0]
    assert rss.rejected == {}  # an empty feed is not a malformed one


def test_entries_at_or_before_since_are_not_given_again() -> None:
    feed = rss2(
        ("a", "Old", "Thu, 01 Jan 2026 05:00:00 GMT"),
        ("b", "At the cursor", "Thu, 01 Jan 2026 06:00:00 GMT"),
        ("c", "New", "Thu, 01 Jan 2026 07:00:00 GMT"),
    )

    async def main() -> list[Frame]:
        time = VirtualTime()
        async with Site(time) as site:
            rss = source([site.serve("/feed.xml", Reply(feed))], time)
            since = datetime(2026, 1, 1, 6, tzinfo=UTC)
            return await run_until(rss, time, lambda frames: len(site.requests) >= 2, since=since)

    frames = asyncio.run(main())
    assert [t for f in frames for t in f.texts["title"].tolist()] == ["New"]


def test_the_ssrf_guard_refuses_private_targets_unless_allowed() -> None:
    with pytest.raises(ValidationError, match="loopback address"):
        RssOptions(urls=["http://127.0.0.1:8080/feed.xml"])
    with pytest.raises(ValidationError, match="internal name"):
        RssOptions(urls=["https://metadata.google.internal/computeMetadata/v1/"])
    assert RssOptions(urls=["http://127.0.0.1:8080/feed.xml"], allow_private=True).allow_private

    async def rebinding() -> Rss:  # a public name answering with a loopback address: never dialled
        time = VirtualTime()

        async def resolver(host: str) -> list[str]:
            return ["127.0.0.1"]

        rss = Rss(urls=["https://feeds.example.com/feed.xml"], host_interval=0, clock=time.clock, sleep=time.sleep)
        rss.resolver = resolver
        await run_until(rss, time, lambda frames: rss.rejected.get("unsafe_url", 0) >= 2)
        return rss

    rss = asyncio.run(rebinding())
    assert set(rss.rejected) == {"unsafe_url"}


# -- through the engine: rss + new_item ------------------------------------------------------


def test_an_rss_automation_signals_a_new_matching_item_with_its_title_and_url(db: Database) -> None:
    backlog = rss2(("a", "Python 3.13 notes", "Thu, 01 Jan 2026 07:00:00 GMT"))
    fresh = rss2(
        ("a", "Python 3.13 notes", "Thu, 01 Jan 2026 07:00:00 GMT"),
        ("b", "Weather today", "Thu, 01 Jan 2026 08:00:00 GMT"),
        ("c", "Python 3.14 released", "Thu, 01 Jan 2026 09:00:00 GMT"),
    )

    async def main() -> list[Any]:
        async with Site() as site:
            url = site.serve("/feed.xml", Reply(backlog), Reply(fresh))
            settings = Settings(
                database="sqlite://",
                base_url="https://alerts.example.com",
                automations=[
                    AutomationConfig(
                        name="py-news",
                        source=PluginConfig(kind="rss", urls=[url], interval="20ms", allow_private=True),
                        detector=DetectorConfig(kind="new_item", match=["python"]),
                        retention=None,
                    )
                ],
            )
            engine = Engine(settings, db, Registry.from_entry_points())
            await engine.start()
            try:
                found = await first_signals(db, "py-news")
            finally:
                await engine.stop()
            assert engine.statuses()[0].last_error is None
            assert site.requests[0].headers["User-Agent"].endswith("(+https://alerts.example.com)")
            return found

    signals = asyncio.run(main())
    assert len(signals) == 1
    signal = signals[0]
    assert signal.key.endswith("/feed.xml#c")
    assert signal.payload["title"] == "Python 3.14 released"
    assert signal.payload["url"] == "https://blog.example.com/posts/c"
    assert signal.time == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert timedelta(0) < datetime.now(UTC) - signal.time
