"""A Hugging Face Hub on loopback for the tests: the two routes huggingface_hub uses to
list a repository and to fetch a file, serving repositories made of local files. It
records every request, so tests can tell what was (and was not) downloaded, and it can
serve files slowly (a server that sends slowly is a fact of the test, not a sleep
standing in for synchronisation)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.bytes_per_s: float | None = None  # slow downloads of weight files
        self.url = ""

    def add_folder(self, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None) -> None:
        paths = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name[0] != "."]
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in paths}
        self.repos[repo_id] = {**files, **(extra or {})}

    def fetched(self, repo_id: str) -> list[str]:
        """Files of `repo_id` whose bytes were sent (GET), in order."""
        prefix = f"/{repo_id}/resolve/"
        return [p.split("/", 5)[5] for m, p in self.requests if m == "GET" and p.startswith(prefix)]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    info_route = re.compile(r"^/api/models/([^/]+/[^/?]+)(?:/revision/[^?]*)?(?:\?.*)?$")
    file_route = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(code)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if head:
                return
            if self.bytes_per_chunk is None:
                self.wfile.write(body)
                return
            for i in range(0, len(body), self.bytes_per_chunk):
                self.wfile.write(body[i : i + self.bytes_per_chunk])
                self.wfile.flush()
                time.sleep(self.bytes_per_chunk / hub.bytes_per_s)  # the server is slow

        bytes_per_chunk: int | None = None

        def _serve(self, head: bool) -> None:
            hub.requests.append(("HEAD" if head else "GET", self.path))
            self.bytes_per_chunk = None
            if m := info_route.match(self.path):
                repo = hub.repos.get(m.group(1))
                if repo is None:
                    return self._send(404, b'{"error":"Repository not found"}',
                                      {"X-Error-Code": "RepoNotFound"}, head)  # fmt: skip
                siblings = [{"rfilename": f, "size": len(b)} for f, b in repo.items()]
                body = json.dumps({"id": m.group(1), "modelId": m.group(1), "sha": SHA,
                                   "siblings": siblings, "private": False}).encode()  # fmt: skip
                return self._send(200, body, {"Content-Type": "application/json"}, head)
            if m := file_route.match(self.path):
                repo = hub.repos.get(m.group(1), {})
                name = m.group(3).split("?")[0]
                if name not in repo:
                    return self._send(404, b"not found", {"X-Error-Code": "EntryNotFound"}, head)
                body = repo[name]
                if hub.bytes_per_s and name.endswith(".safetensors"):
                    self.bytes_per_chunk = 4096
                etag = hashlib.sha256(body).hexdigest()
                headers = {"X-Repo-Commit": SHA, "ETag": f'"{etag}"',
                           "Content-Type": "application/octet-stream"}  # fmt: skip
                return self._send(200, body, headers, head)
            return self._send(404, b"no route", {}, head)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(head=True)

    return Handler


@contextmanager
def running_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
