"""The webhook receiver of the multi-host test, run in its own network namespace:

    python receiver.py HOST PORT    (or serve(HOST, PORT) in a forked process)

Every POST is answered 200 and recorded as ``[path, webhook-id, signal id]`` (the signal id
read from the Standard Webhooks payload's ``data.id``); ``GET /deliveries?after=N`` returns
the records from the N-th on (so the test reads them in slices while load runs), ``GET
/count`` how many there are. A real HTTP server (uvicorn) speaking the real wire format.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn

records: list[list[Any]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    more = True
    while more:
        event = await receive()
        chunks.append(event.get("body", b""))
        more = event.get("more_body", False)
    status = 200
    if scope["method"] == "POST":
        headers = dict(scope["headers"])
        try:
            signal_id = json.loads(b"".join(chunks))["data"]["id"]
        except (ValueError, KeyError, TypeError):
            signal_id = None
        records.append([scope["path"], headers.get(b"webhook-id", b"").decode(), signal_id])
        body = b"ok"
    elif scope["path"] == "/count":
        body = json.dumps(len(records)).encode()
    elif scope["path"] == "/deliveries":
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        body = json.dumps(records[int(query.get("after", "0")) :]).encode()
    else:
        status, body = 404, b"not found"
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def serve(host: str, port: int) -> None:
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, backlog=2048)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
