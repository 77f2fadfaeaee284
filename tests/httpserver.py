"""A real HTTP server on 127.0.0.1 for fetch tests: byte ranges, and scripted misbehaviour."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    """Serves files from a folder. `drop_after[name] = (k, n)`: the k-th GET of `name` (1-based) is cut
    after n body bytes; `delay` sleeps between 64 KB chunks; every request is recorded in `log`."""

    def __init__(self, root: Path):
        self.root = root
        self.log: list[dict] = []
        self.drop_after: dict[str, tuple[int, int]] = {}
        self.delay = 0.0
        self.content_type: dict[str, str] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, head_only: bool) -> None:
                name = self.path.lstrip("/").split("?")[0]
                path = server.root / name
                server.log.append({"method": self.command, "path": name, "range": self.headers.get("Range")})
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                start, end = 0, len(data) - 1
                m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                if m:
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else end
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", server.content_type.get(name, "video/mp4"))
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head_only:
                    return
                body = data[start:end + 1]
                gets = sum(1 for r in server.log if r["path"] == name and r["method"] == "GET")
                nth, limit = server.drop_after.get(name, (0, None))
                if nth != gets:
                    limit = None
                sent = 0
                for i in range(0, len(body), 65536):
                    chunk = body[i:i + 65536]
                    if limit is not None and sent + len(chunk) > limit:
                        self.wfile.write(chunk[: max(0, limit - sent)])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if server.delay:
                        time.sleep(server.delay)

            def do_GET(self):  # noqa: N802
                self._send(False)

            def do_HEAD(self):  # noqa: N802
                self._send(True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
