"""A stand-in Hugging Face Hub for tests: a threaded HTTP server on 127.0.0.1.

It speaks the part of the Hub protocol that ``huggingface_hub`` uses for ``hf_hub_download``
(HEAD/GET ``/{repo}/resolve/{revision}/{file}``), ``snapshot_download``
(``/api/models/{repo}/revision/{revision}``, ``/api/models/{repo}/tree/{revision}``) and
``upload_folder`` / ``create_commit`` (``/api/repos/create``, ``/api/validate-yaml``,
``/api/models/{repo}/preupload/{revision}``, ``/api/models/{repo}/commit/{revision}``; every
file is answered "regular", so contents travel base64 in the commit, no LFS or Xet).

Faults for error-path tests: ``truncate`` (file names whose body is cut in half while the
full length is announced), ``hang`` (every request waits until the server stops), ``trickle``
(file names whose body comes one byte every ``trickle_s`` seconds) and ``no_length`` (file
names sent without a Content-Length, the end marked by closing the connection).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    commit: str = "0" * 40

    def bump(self) -> None:
        blob = json.dumps(sorted((k, _sha1(v)) for k, v in self.files.items())).encode()
        self.commit = _sha1(blob + self.commit.encode())


class StandInHub:
    """``with StandInHub() as hub: hub.add("owner/name", {"file": b"..."}); hub.url``"""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.release: dict[str, bytes] = {}  # /release/<name>: a plain download (the BEiT-3 release)
        self.truncate: set[str] = set()
        self.trickle: set[str] = set()
        self.trickle_s = 0.5
        self.no_length: set[str] = set()
        self.hang = False
        self.requests: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, files: dict[str, bytes]) -> Repo:
        repo = self.repos.setdefault(repo_id, Repo())
        repo.files.update(files)
        repo.bump()
        return repo

    def __enter__(self) -> "StandInHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    # --- the handler --------------------------------------------------------------------

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a cut body is seen as such

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None,
                      ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _slow_or_unsized(self, name: str, data: bytes, headers: dict[str, str]) -> bool:
                """Send ``data`` trickling or without a length when ``name`` asks for it (True: sent)."""
                if self.command != "GET" or (name not in hub.trickle and name not in hub.no_length):
                    return False
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if name not in hub.no_length:
                    self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    if name in hub.trickle:
                        for i in range(len(data)):
                            if hub._stop.wait(hub.trickle_s):
                                break
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                    else:
                        self.wfile.write(data)
                except OSError:  # the client gave up
                    pass
                self.close_connection = True
                return True

            def _json(self, data, code: int = 200) -> None:
                self._send(code, json.dumps(data).encode())

            def _error(self, code: int, error_code: str, message: str) -> None:
                self._send(code, json.dumps({"error": message}).encode(),
                           {"X-Error-Code": error_code, "X-Error-Message": message})

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _route(self) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path))
                if hub.hang:
                    hub._stop.wait(60)
                    return
                if path.startswith("/release/") and self.command in ("HEAD", "GET"):
                    data = hub.release.get(path.removeprefix("/release/"))
                    if data is None:
                        return self._error(404, "NotFound", "no such release file")
                    if self._slow_or_unsized(path.removeprefix("/release/"), data, {}):
                        return None
                    return self._send(200, data, ctype="application/octet-stream")
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)", path)
                if m and self.command == "GET":
                    return self._api(m.group(1), "revision", "main")
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree|preupload|commit)/([^/]+)(/.*)?", path)
                if m:
                    return self._api(m.group(1), m.group(2), m.group(3))
                if path == "/api/repos/create" and self.command == "POST":
                    data = json.loads(self._body() or b"{}")
                    repo_id = f"{data.get('organization') or 'user'}/{data['name']}"
                    if repo_id in hub.repos:
                        return self._error(409, "RepoExists", "You already created this model repo")
                    hub.repos[repo_id] = Repo()
                    return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml" and self.command == "POST":
                    self._body()
                    return self._json({"errors": [], "warnings": []})
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m and self.command in ("HEAD", "GET"):
                    return self._resolve(m.group(1), m.group(2), m.group(3))
                self._error(404, "NotFound", f"no route for {self.command} {path}")

            def _repo(self, repo_id: str, revision: str) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", "Repository not found")
                    return None
                if revision not in ("main", repo.commit):
                    self._error(404, "RevisionNotFound", "Invalid rev id")
                    return None
                return repo

            def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
                repo = self._repo(repo_id, revision)
                if repo is None:
                    return
                data = repo.files.get(filename)
                if data is None:
                    return self._error(404, "EntryNotFound", "Entry not found")
                headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{_sha1(data)}"', "Accept-Ranges": "bytes"}
                if self._slow_or_unsized(filename, data, headers):
                    return None
                if filename in hub.truncate and self.command == "GET":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(200, data, headers, ctype="application/octet-stream")

            def _api(self, repo_id: str, kind: str, revision: str) -> None:
                if kind == "revision" and self.command == "GET":
                    repo = self._repo(repo_id, revision)
                    if repo:
                        self._json({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                                    "siblings": [{"rfilename": f} for f in sorted(repo.files)]})
                elif kind == "tree" and self.command == "GET":
                    repo = self._repo(repo_id, revision)
                    if repo:
                        self._json([{"type": "file", "path": f, "size": len(d), "oid": _sha1(d)}
                                    for f, d in sorted(repo.files.items())])
                elif kind == "preupload" and self.command == "POST":
                    repo = self._repo(repo_id, revision)
                    if repo:
                        files = json.loads(self._body())["files"]
                        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
                elif kind == "commit" and self.command == "POST":
                    repo = self._repo(repo_id, revision)
                    if repo:
                        for line in self._body().splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                value = item["value"]
                                repo.files[value["path"]] = base64.b64decode(value["content"])
                            elif item["key"] == "deletedFile":
                                repo.files.pop(item["value"]["path"], None)
                        repo.bump()
                        self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{repo.commit}",
                                    "commitOid": repo.commit, "pullRequestUrl": None})
                else:
                    self._error(404, "NotFound", f"no route for {self.command} {kind}")

            do_GET = do_HEAD = do_POST = do_PUT = _route

        return Handler
