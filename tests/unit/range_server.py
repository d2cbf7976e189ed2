"""A local HTTP server for download tests: serves a folder, honours ``Range: bytes=N-``, logs requests.

``http.server.SimpleHTTPRequestHandler`` ignores ``Range``, so resumable downloads need this one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeServer(ThreadingHTTPServer):
    """Serves ``directory``; ``requests`` lists ``(path, Range header or None)`` of every GET."""

    def __init__(self, directory: Path):
        super().__init__(("127.0.0.1", 0), RangeRequestHandler)
        self.directory = Path(directory)
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.drop_after: int | None = None  # cut the next response after this many body bytes
        self.keep_dropping = False  # cut every response after drop_after bytes, not only the next
        self.fail_with: list[int] = []  # answer the next requests with these HTTP statuses, one each, before serving
        self.content_range: str | None = None  # a Content-Range to send with 206 answers instead of the true one

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/{name}"


class RangeRequestHandler(BaseHTTPRequestHandler):
    server: RangeServer

    def do_GET(self) -> None:
        range_header = self.headers.get("Range")
        self.server.requests.append((self.path, range_header))
        path = self.server.directory / self.path.lstrip("/")
        if self.server.fail_with:
            self.send_error(self.server.fail_with.pop(0))
            return
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        start = 0
        if match and self.server.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", self.server.content_range or f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.drop_after is not None:
            body = body[: self.server.drop_after]
            if not self.server.keep_dropping:
                self.server.drop_after = None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[RangeServer]:
    """Run a :class:`RangeServer` on a free local port for the block."""
    server = RangeServer(directory)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
