"""
A fake token provider on a real socket, for the tests and the benchmark: the
upstream HTTP call is the one thing that leaves the process, so it is the one
thing faked, and faked over real HTTP.
"""

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

#: How long close() waits for the threads the fake started before it gives up loudly.
CLOSE_TIMEOUT = 5.0


class _TrackedServer(ThreadingHTTPServer):
    """
    A threading HTTP server that knows its handler threads and their sockets,
    so that closing it ends every connection (keep-alive ones too) and waits
    for every thread it started.
    """

    daemon_threads = True
    block_on_close = False  # close() below joins the threads, with a deadline

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closing = threading.Event()
        self.handlers = {}  # thread → its connection
        self.handlers_lock = threading.Lock()

    def process_request(self, request, client_address):
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self.handlers_lock:
            self.handlers[thread] = request
        thread.start()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.handlers_lock:
                self.handlers.pop(threading.current_thread(), None)

    def handle_error(self, request, client_address):
        if not self.closing.is_set():  # a connection cut by close() is not an error
            super().handle_error(request, client_address)

    def close_all(self, timeout):
        """Stop serving, cut every open connection, and wait for every handler thread."""
        self.closing.set()
        with self.handlers_lock:
            handlers = dict(self.handlers)
        for connection in handlers.values():
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread in handlers:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread for thread in handlers if thread.is_alive()]


class FakeUpstream:
    """
    A token provider on a real socket. Each path answers with a programmable
    (status, body) after an optional delay; every request is recorded, so
    tests count upstream calls exactly.

        upstream.reply("/token", {"access_token": "T", "expires_in": 7200})
        upstream.url("/token")  # → http://127.0.0.1:PORT/token
    """

    def __init__(self):
        self.requests = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests it was answering at once
        self.headers = {}
        self._routes = {}
        self._lock = threading.Lock()
        self._counter = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with fake._lock:
                    fake._counter += 1
                    number = fake._counter
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    fake.requests.append(
                        {
                            "at": time.monotonic(),  # when it arrived
                            "method": self.command,
                            "path": parts.path,
                            "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                            "headers": dict(self.headers),
                            "body": body,
                        }
                    )
                    route = fake._routes.get(parts.path)
                extra_headers = {}
                if route is None:
                    status, payload, delay = 404, {"error": "no route"}, 0
                else:
                    answer = route(number) if callable(route) else route
                    status, payload, delay = answer[:3]
                    if len(answer) > 3:  # a route function's own headers (Retry-After …)
                        extra_headers = answer[3]
                try:
                    # A delay ends early when the fake is closed (nobody waits for the answer).
                    if delay and fake.server.closing.wait(delay):
                        self.close_connection = True
                        return
                    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    headers = {**(fake.headers.get(parts.path) or {}), **extra_headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            do_GET = do_POST = _answer

            def log_message(self, *args):  # keep test output clean
                pass

        self.server = _TrackedServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._closed = False
        # A short poll interval: shutdown() waits for the loop to notice (0.5 s by default).
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def url(self, path="/token"):
        return f"http://127.0.0.1:{self.port}{path}"

    def reply(self, path, payload, *, status=200, delay=0.0, headers=None):
        """Answer `path` with `payload` (a dict, or raw bytes)."""
        self._routes[path] = (status, payload, delay)
        self.headers[path] = headers or {}

    def reply_with(self, path, function):
        """
        Answer `path` with function(call_number) → (status, payload, delay), or
        (status, payload, delay, headers); the request is self.requests[call_number - 1].
        """
        self._routes[path] = function

    def calls(self, path="/token"):
        return [request for request in self.requests if request["path"] == path]

    def close(self):
        """
        Stop at once: no new connections, open ones cut, delayed answers
        abandoned; every thread the fake started has finished when this returns.
        """
        if self._closed:
            return
        self._closed = True
        self.server.shutdown()  # the accept loop: within its poll interval
        self._thread.join(CLOSE_TIMEOUT)
        left = self.server.close_all(CLOSE_TIMEOUT)
        self.server.server_close()
        if left or self._thread.is_alive():
            raise RuntimeError(f"FakeUpstream: {len(left)} handler thread(s) did not finish")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def numbered_tokens(lifetime=7200, delay=0.0):
    """A route answering TOKEN-1, TOKEN-2, … (one new token per call)."""

    def route(number):
        return 200, {"access_token": f"TOKEN-{number}", "expires_in": lifetime}, delay

    return route


def sequence(*answers):
    """
    A route answering (status, payload) or (status, payload, delay) in turn,
    one per call; the last answer repeats.
    """

    def route(number):
        answer = answers[min(number, len(answers)) - 1]
        status, payload = answer[0], answer[1]
        return status, payload, answer[2] if len(answer) > 2 else 0.0

    return route


def gunicorn_command(port: int, *, workers: int, threads: int) -> list[str]:
    """tokenserver under gunicorn (threads per worker), as the tests and the benchmark run it."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "tokenserver.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
    ]
