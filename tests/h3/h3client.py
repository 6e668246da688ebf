#!/usr/bin/env python3
"""A small HTTP/3 client for the end-to-end tests (tests/http3.rs), on aioquic.

Usage: h3client.py PORT  (the requests as JSON on stdin)

stdin:  [{"method": "GET", "path": "/x", "headers": [["origin", "https://a.example"]]}, ...]
stdout: [{"status": 200, "headers": [["name", "value"], ...], "body": "..."}, ...]

The requests go one after another on one QUIC connection to 127.0.0.1:PORT, with the
authority `localhost`; the server's certificate is not verified (the test made it a moment ago).
"""
import asyncio
import json
import ssl
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_id in self.waiting:
                answer, done = self.waiting[ev.stream_id]
                if isinstance(ev, HeadersReceived):
                    if answer["status"] is None:
                        for k, v in ev.headers:
                            if k == b":status":
                                answer["status"] = int(v)
                            else:
                                answer["headers"].append([k.decode(), v.decode("latin-1")])
                else:
                    answer["body"] += ev.data.decode("latin-1")
                if ev.stream_ended and not done.done():
                    done.set_result(answer)

    async def request(self, method, path, headers):
        stream_id = self._quic.get_next_available_stream_id()
        done = asyncio.get_running_loop().create_future()
        self.waiting[stream_id] = ({"status": None, "headers": [], "body": ""}, done)
        self.h3.send_headers(
            stream_id,
            [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", path.encode()),
            ]
            + [(k.lower().encode(), v.encode()) for k, v in headers],
            end_stream=True,
        )
        self.transmit()
        return await asyncio.wait_for(done, 10)


async def main():
    port = int(sys.argv[1])
    requests = json.load(sys.stdin)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.verify_mode = ssl.CERT_NONE
    config.server_name = "localhost"
    answers = []
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Client) as client:
        for r in requests:
            answers.append(await client.request(r["method"], r["path"], r.get("headers", [])))
    json.dump(answers, sys.stdout)


asyncio.run(main())
