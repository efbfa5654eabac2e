"""A small HTTP server on loopback that answers the KFP v2beta1 REST calls and records them.

Tests use it to see exactly what `vla-rft pipeline submit/schedule` send to a cluster.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class _LoopbackHTTP:
    """A ThreadingHTTPServer with ``handler`` on a free 127.0.0.1 port, served while the ``with`` block runs."""

    def _serve(self, handler) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class RecordingKFP(_LoopbackHTTP):
    """``hang``: paths (e.g. ``/apis/v2beta1/runs``) answered never (until the server stops), after recording."""

    def __init__(self, hang: tuple[str, ...] = ()):
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.released = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                recorder.requests.append({"method": method, "path": url.path, "query": parse_qs(url.query),
                                          "body": body, "raw": raw.decode(errors="replace"),
                                          "headers": dict(self.headers)})
                path = url.path.rstrip("/")
                if path in hang:
                    recorder.released.wait()
                    return None
                if path.endswith("/healthz"):
                    return self._reply(200, {"multi_user": False})
                if path == "/apis/v2beta1/experiments" and method == "GET":
                    flt = json.loads(parse_qs(url.query).get("filter", ["{}"])[0] or "{}")
                    names = {p.get("string_value") for p in flt.get("predicates", []) if p.get("key") == "display_name"}
                    found = [e for e in recorder.experiments.values() if e["display_name"] in names]
                    return self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
                if path == "/apis/v2beta1/experiments" and method == "POST":
                    exp = {"experiment_id": f"exp-{len(recorder.experiments) + 1}", "display_name": body["display_name"]}
                    recorder.experiments[exp["experiment_id"]] = exp
                    return self._reply(200, exp)
                if path.startswith("/apis/v2beta1/experiments/") and method == "GET":
                    exp = recorder.experiments.get(path.rsplit("/", 1)[1])
                    return self._reply(200, exp) if exp else self._reply(404, {"error": "not found"})
                if path == "/apis/v2beta1/runs" and method == "POST":
                    return self._reply(200, {"run_id": "run-1", "display_name": body.get("display_name"),
                                             "experiment_id": body.get("experiment_id")})
                if path == "/apis/v2beta1/recurringruns" and method == "POST":
                    return self._reply(200, {"recurring_run_id": "rr-1", "display_name": body.get("display_name")})
                return self._reply(404, {"error": f"unexpected {method} {url.path}"})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self._serve(Handler)

    def __exit__(self, *exc):
        self.released.set()
        super().__exit__(*exc)

    def posts(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"].rstrip("/") == path]


class HangingServer:
    """A TCP listener on loopback that accepts connections and never answers (a stuck endpoint)."""

    def __init__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)  # held open, never read from or written to

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class HTML404Server(_LoopbackHTTP):
    """An HTTP server on loopback that answers everything with an HTML 404 page (a web server, not KFP)."""

    PAGE = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"

    def __init__(self):
        page = self.PAGE

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            do_GET = do_POST = do_PUT = do_DELETE = _reply

        self._serve(Handler)

