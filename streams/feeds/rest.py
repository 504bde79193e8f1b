"""One JSON request to a venue's REST endpoint, shared by the tables fetched at ``liqmon live`` start."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

__all__ = ["fetch_json"]


async def fetch_json(http: aiohttp.ClientSession, url: str, post_json: Any = None) -> Any:
    """The JSON body of ``GET url`` (or ``POST url`` with ``post_json``); non-200 raises ClientResponseError."""
    call = http.get(url) if post_json is None else http.post(url, json=post_json)
    async with call as resp:
        body = await resp.read()
        if resp.status != 200:
            raise aiohttp.ClientResponseError(
                resp.request_info, (), status=resp.status, message=body[:200].decode(errors="replace"))
    return orjson.loads(body)
