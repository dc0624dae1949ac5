"""The Hermes agent's `wecom_callback` adapter (PyPI `hermes-agent`), run standalone for the
load benchmark: its own aiohttp server, crypto, dedup and `message/send`, with the agent
stubbed out (each message is answered with its own text, as wecom-relay's echo agent does) and
WeCom's API host pointed at the local stand-in.

Usage: hermes_adapter.py PORT STANDIN_BASE_URL PARAMS_JSON
"""

import asyncio
import json
import logging
import sys

import httpx
from gateway.config import Platform, PlatformConfig
from plugins.platforms.wecom import callback_adapter
from plugins.platforms.wecom.callback_adapter import WecomCallbackAdapter


def main() -> None:
    port, standin, params = int(sys.argv[1]), httpx.URL(sys.argv[2]), json.loads(sys.argv[3])
    logging.basicConfig(level=logging.WARNING)

    async def to_standin(request: httpx.Request) -> None:
        # The adapter calls https://qyapi.weixin.qq.com directly; send it to the stand-in.
        if request.url.host == "qyapi.weixin.qq.com":
            request.url = request.url.copy_with(scheme=standin.scheme, host=standin.host, port=standin.port)

    class ToStandin(httpx.AsyncClient):
        def __init__(self, *args, **kwargs):
            kwargs["event_hooks"] = {"request": [to_standin]}
            super().__init__(*args, **kwargs)

    callback_adapter.httpx.AsyncClient = ToStandin
    config = PlatformConfig(enabled=True, extra={**params, "host": "127.0.0.1", "port": port})
    adapter = WecomCallbackAdapter(config)

    async def echo(event) -> None:
        await adapter.send(event.source.chat_id, event.text)

    adapter.handle_message = echo

    async def run() -> None:
        if not await adapter.connect():
            sys.exit("the adapter did not start")
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    assert Platform.WECOM_CALLBACK
    main()
