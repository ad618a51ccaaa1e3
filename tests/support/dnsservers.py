"""Servers unbound does not offer, in the test process, each forwarding to a real DNS server over UDP:
a DoH JSON endpoint, a DNS-over-QUIC server (aioquic), and a TLS front that makes an HTTP proxy
an https:// proxy."""

from __future__ import annotations

import asyncio
import base64
import json
import select
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.certs import Certs
from tests.support.upstream import TLSServer


def ask_udp(wire: bytes, port: int) -> bytes:
    """ask_udp sends a DNS query in wire format to 127.0.0.1:port and returns the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(wire, ("127.0.0.1", port))
        return s.recv(65535)


class DoHJSON:
    """DoHJSON answers the DoH JSON API (?name=&type=) by asking the DNS server on dns_port.

    RFC 8484 queries (?dns=) are refused with 400, as Google's /resolve does, unless wire is
    set. Counters: json_answers, wire_answers, refused; accepts lists the Accept headers seen.
    """

    def __init__(self, certs: Certs, dns_port: int, wire: bool = False) -> None:
        self.json_answers = self.wire_answers = self.refused = 0
        self.accepts: list[str] = []
        self.lock = threading.Lock()
        owner = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                with owner.lock:
                    owner.accepts.append(self.headers.get("Accept", ""))
                if "dns" in params and wire:
                    text = params["dns"][0]
                    answer = ask_udp(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), dns_port)
                    with owner.lock:
                        owner.wire_answers += 1
                    self.reply(200, "application/dns-message", answer)
                elif "name" in params:
                    body = owner.answer_json(params["name"][0], params.get("type", ["A"])[0], dns_port)
                    with owner.lock:
                        owner.json_answers += 1
                    self.reply(200, "application/dns-json", body)
                else:
                    with owner.lock:
                        owner.refused += 1
                    self.reply(400, "text/plain", b"missing name")

            def reply(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = TLSServer(("127.0.0.1", 0), H)
        self.server.tls = certs.server_context()
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/resolve"

    @staticmethod
    def answer_json(name: str, rdtype: str, dns_port: int) -> bytes:
        import dns.message

        q = dns.message.make_query(name, rdtype)
        r = dns.message.from_wire(ask_udp(q.to_wire(), dns_port))
        answers = [{"name": rrset.name.to_text(), "type": int(rrset.rdtype), "TTL": rrset.ttl, "data": rd.to_text()}
                   for rrset in r.answer for rd in rrset]
        return json.dumps({"Status": r.rcode(), "Answer": answers}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DoQServer:
    """DoQServer is DNS over QUIC (RFC 9250) on 127.0.0.1, forwarding each query to dns_port.

    queries counts the queries answered.
    """

    def __init__(self, certs: Certs, dns_port: int) -> None:
        from aioquic.asyncio.protocol import QuicConnectionProtocol
        from aioquic.asyncio.server import serve
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.events import StreamDataReceived

        self.queries = 0
        owner = self

        class Protocol(QuicConnectionProtocol):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.pending: dict[int, bytes] = {}

            def quic_event_received(self, event: Any) -> None:
                if not isinstance(event, StreamDataReceived):
                    return
                data = self.pending.pop(event.stream_id, b"") + event.data
                if not event.end_stream:
                    self.pending[event.stream_id] = data
                    return
                n = int.from_bytes(data[:2], "big")  # RFC 9250: a 2-byte length, then the message
                answer = ask_udp(data[2:2 + n], dns_port)
                owner.queries += 1
                self._quic.send_stream_data(event.stream_id, len(answer).to_bytes(2, "big") + answer,
                                            end_stream=True)
                self.transmit()

        config = QuicConfiguration(is_client=False, alpn_protocols=["doq"])
        config.load_cert_chain(str(certs.cert), str(certs.key))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = serve("127.0.0.1", 0, configuration=config, create_protocol=Protocol)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        transport = self.server._transport  # set when the server's socket is bound (before serve returns)
        assert transport is not None
        self.port = int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class TLSFront:
    """TLSFront accepts TLS on 127.0.0.1 and relays the plaintext to target_port: in front of an
    HTTP proxy it makes an https:// proxy. connections counts the TLS sessions it carried."""

    def __init__(self, certs: Certs, target_port: int) -> None:
        self.ctx = certs.server_context()
        self.target_port = target_port
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return
        self.connections += 1
        with tls, socket.create_connection(("127.0.0.1", self.target_port)) as up:
            # One thread moves both ways: an SSLSocket must not be read and written at once.
            while True:
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], 30)[0]
                if not ready:
                    return
                for s in ready:
                    try:
                        data = s.recv(1 << 16)
                    except OSError:
                        return
                    if not data:
                        return
                    (up if s is tls else tls).sendall(data)

    def close(self) -> None:
        self.sock.close()
