"""A Hub-compatible test server, used only through the real `huggingface_hub` and `datasets` clients.

It answers the routes those clients call to create repos, commit files (NDJSON commits; Parquet and
other binaries through the LFS batch API), tag, list refs, trees and commits, and download files,
following the Hub's public API (routes as in `shared/reference/hub_protocol_sketch.py`). Everything is
kept in memory; each commit is a snapshot `{path: blob}`. Clients must set `HF_HUB_DISABLE_XET=1`
(the test suite's conftest does) and point `HF_ENDPOINT` at `server.url`.

Every request is logged in `server.log` as (method, path), so tests can assert that nothing was uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_PATTERN = re.compile(r"\.(parquet|arrow|safetensors|bin|pt|gguf|png)$")
KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass
class Blob:
    data: bytes

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    kind: str
    repo_id: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pulls: list[str] = field(default_factory=list)  # commit of refs/pr/N at index N - 1

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags), ("", self.branches)):
            if revision.startswith(prefix) and revision[len(prefix) :] in table:
                return table[revision[len(prefix) :]]
        if revision in self.tags:
            return self.tags[revision]
        pr = re.fullmatch(r"refs/pr/(\d+)", revision)
        if pr and 0 < int(pr.group(1)) <= len(self.pulls):
            return self.pulls[int(pr.group(1)) - 1]
        return revision if revision in self.commits else None

    def files_at(self, oid: str | None) -> dict[str, Blob]:
        return self.commits[oid].files if oid else {}

    def commit(self, parent: str | None, title: str, message: str, files: dict[str, Blob]) -> str:
        stamp = json.dumps([parent, title, time.time_ns(), sorted((p, b.git_oid) for p, b in files.items())])
        oid = hashlib.sha1(stamp.encode()).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        self.commits[oid] = Commit(oid, parent, title, message, date, files)
        return oid


class HubTestServer:
    """Runs on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.log: list[tuple[str, str]] = []
        self.authorizations: set[str] = set()  # Authorization headers received
        self.refused_tokens: set[str] = set()  # tokens answered 401, as the Hub answers an invalid one
        self.lock = threading.RLock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                server._handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = handle_any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HubTestServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.repos.clear()
            self.lfs.clear()
            self.log.clear()
            self.authorizations.clear()
            self.refused_tokens.clear()

    def uploads(self) -> list[tuple[str, str]]:
        """Requests that change state (anything but GET/HEAD and read-only POSTs)."""
        read_only = ("/paths-info/", "/preupload/", "/api/validate-yaml")
        return [(m, p) for m, p in self.log if m not in ("GET", "HEAD") and not any(r in p for r in read_only)]

    # -- plumbing -----------------------------------------------------------------------------------------

    @staticmethod
    def _reply(
        handler, status: int, payload=None, body: bytes | None = None, headers=None, content_type="application/json"
    ):
        if body is None:
            body = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            handler.send_header(key, str(value))
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _error(self, handler, status: int, message: str, code: str | None = None):
        headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
        self._reply(handler, status, {"error": message}, headers=headers)

    def _handle(self, handler) -> None:
        parts = urlsplit(handler.path)
        path, query = parts.path, parse_qs(parts.query)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self.lock:
            self.log.append((handler.command, handler.path))
            if handler.headers.get("Authorization"):
                self.authorizations.add(handler.headers["Authorization"])
        token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ")
        if token and token in self.refused_tokens:
            return self._error(handler, 401, "Invalid credentials in Authorization header")
        try:
            self._route(handler, handler.command, path, query, body)
        except Exception as error:  # a bug in the test server shows up as a 500 with its message
            self._error(handler, 500, f"{type(error).__name__}: {error}")

    def _repo(self, kind: str, repo_id: str) -> Repo | None:
        return self.repos.get((kind, unquote(repo_id)))

    # -- routes ---------------------------------------------------------------------------------------------

    # Routes: (method or None for any, path pattern, handler). The handler gets the request handler, the
    # method, the path's groups, the query and the body. Checked in order; the first match answers.
    ROUTES = (
        (None, r"/api/whoami-v2", "_whoami"),
        (None, r"/api/validate-yaml", "_validate_yaml"),
        ("POST", r"/api/repos/create", "_create"),
        (None, r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", "_lfs_batch"),
        (None, r"/lfs-upload/([0-9a-f]{64})", "_lfs_upload"),
        (None, r"/api/(models|datasets|spaces)/([^/]+/[^/]+?)(?:/([a-z-]+)(?:/(.*))?)?", "_api"),
        (None, r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", "_resolve"),
    )

    def _route(self, handler, method, path, query, body) -> None:
        for wanted, pattern, name in self.ROUTES:
            match = re.fullmatch(pattern, path)
            if match and wanted in (None, method):
                return getattr(self, name)(handler, method, match.groups(), query, body)
        return self._error(handler, 404, f"no route {method} {path}")

    def _whoami(self, handler, method, groups, query, body) -> None:
        self._reply(handler, 200, {"type": "user", "name": "tester", "orgs": [], "auth": {"type": "access_token"}})

    def _validate_yaml(self, handler, method, groups, query, body) -> None:
        self._reply(handler, 200, {"errors": [], "warnings": []})

    def _lfs_upload(self, handler, method, groups, query, body) -> None:
        (oid,) = groups
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(handler, 400, "sha256 mismatch")
        with self.lock:
            self.lfs[oid] = body
        return self._reply(handler, 200, {})

    def _create(self, handler, method, groups, query, body) -> None:
        request = json.loads(body or b"{}")
        kind = request.get("type") or "model"
        repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
        if "/" not in repo_id:
            repo_id = f"tester/{repo_id}"
        prefix = "" if kind == "model" else f"{kind}s/"
        with self.lock:
            if (kind, repo_id) in self.repos:  # the Hub names the existing repo's url in the conflict
                message = "You already created this repo"
                headers = {"X-Error-Message": message}
                return self._reply(
                    handler, 409, {"error": message, "url": f"{self.url}/{prefix}{repo_id}"}, headers=headers
                )
            private = request.get("visibility") == "private" or bool(request.get("private"))
            repo = Repo(kind, repo_id, private=private)
            first = repo.commit(
                None, "initial commit", "", {".gitattributes": Blob(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n")}
            )
            repo.branches["main"] = first
            self.repos[(kind, repo_id)] = repo
        self._reply(handler, 200, {"url": f"{self.url}/{prefix}{repo_id}", "name": repo_id})

    def _lfs_batch(self, handler, method, groups, query, body) -> None:
        request = json.loads(body)
        objects = []
        for item in request.get("objects", []):
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        self._reply(
            handler, 200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json"
        )

    def _info(self, repo: Repo, oid: str) -> dict:
        files = repo.files_at(oid)
        commit = repo.commits[oid]
        readme = files.get("README.md")
        card = None
        if readme is not None:
            front = re.match(r"^---\s*\n(.*?)\n---\s*\n", readme.data.decode("utf-8"), re.S)
            card = yaml.safe_load(front.group(1)) if front else None
        info = {
            "_id": repo.repo_id,
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": commit.date,
            "createdAt": commit.date,
            "cardData": card,
            "siblings": [{"rfilename": p, "size": len(b.data), "blobId": b.git_oid} for p, b in sorted(files.items())],
        }
        if repo.kind == "model":
            info["modelId"] = repo.repo_id
        return info

    def _tree(self, repo: Repo, oid: str, folder: str, recursive: bool) -> list[dict]:
        folder = folder.strip("/")
        prefix = f"{folder}/" if folder else ""
        entries, folders = [], set()
        for path, blob in sorted(repo.files_at(oid).items()):
            if not path.startswith(prefix):
                continue
            segments = path[len(prefix) :].split("/")
            for depth in range(1, len(segments)):
                directory = prefix + "/".join(segments[:depth])
                if (recursive or depth == 1) and directory not in folders:
                    folders.add(directory)
                    entries.append(
                        {
                            "type": "directory",
                            "oid": hashlib.sha1(directory.encode()).hexdigest(),
                            "size": 0,
                            "path": directory,
                        }
                    )
            if recursive or len(segments) == 1:
                entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
                if LFS_PATTERN.search(path):
                    entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 134}
                entries.append(entry)
        return entries

    # Repo API actions: (action, method or None for any) -> handler(handler, method, repo, rest, query, body).
    API_ACTIONS = {
        (None, None): "_repo_info",
        ("settings", "PUT"): "_settings",
        ("refs", None): "_refs",
        ("revision", None): "_revision",
        ("tree", None): "_tree_listing",
        ("commits", None): "_commits",
        ("paths-info", None): "_paths_info",
        ("preupload", None): "_preupload",
        ("commit", "POST"): "_commit_route",
        ("tag", None): "_tag_route",
        ("branch", "POST"): "_branch",
    }

    def _api(self, handler, method, groups, query, body) -> None:
        kind, repo_id, action, rest = KINDS[groups[0]], groups[1], groups[2], groups[3] or ""
        repo = self._repo(kind, repo_id)
        if repo is None:
            return self._error(handler, 404, "Repository not found", "RepoNotFound")
        name = self.API_ACTIONS.get((action, method)) or self.API_ACTIONS.get((action, None))
        if name is None:
            return self._error(handler, 404, f"no action {method} {action}")
        return getattr(self, name)(handler, method, repo, rest, query, body)

    def _at(self, handler, repo: Repo, revision: str) -> str | None:
        """The commit `revision` names, or None after answering 404."""
        oid = repo.resolve(revision)
        if oid is None:
            self._error(handler, 404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return oid

    def _repo_info(self, handler, method, repo, rest, query, body) -> None:
        self._reply(handler, 200, self._info(repo, repo.branches["main"]))

    def _settings(self, handler, method, repo, rest, query, body) -> None:
        settings = json.loads(body or b"{}")
        if "visibility" in settings:
            repo.private = settings["visibility"] == "private"
        repo.private = bool(settings.get("private", repo.private))
        self._reply(handler, 200, {})

    def _refs(self, handler, method, repo, rest, query, body) -> None:
        def listed(table, ref):
            return [{"name": n, "ref": f"refs/{ref}/{n}", "targetCommit": c} for n, c in table.items()]

        pulls = [
            {"name": f"refs/pr/{i}", "ref": f"refs/pr/{i}", "targetCommit": c} for i, c in enumerate(repo.pulls, 1)
        ]
        refs = {
            "branches": listed(repo.branches, "heads"),
            "tags": listed(repo.tags, "tags"),
            "converts": [],
            "pullRequests": pulls,
        }
        self._reply(handler, 200, refs)

    def _revision(self, handler, method, repo, rest, query, body) -> None:
        if (oid := self._at(handler, repo, rest)) is not None:
            self._reply(handler, 200, self._info(repo, oid))

    def _tree_listing(self, handler, method, repo, rest, query, body) -> None:
        revision, _, sub = rest.partition("/")
        if (oid := self._at(handler, repo, revision)) is None:
            return
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries = self._tree(repo, oid, unquote(sub), recursive)
        if sub and not entries and unquote(sub) not in repo.files_at(oid):
            return self._error(handler, 404, "Entry not found", "EntryNotFound")
        self._reply(handler, 200, entries)

    def _commits(self, handler, method, repo, rest, query, body) -> None:
        if (oid := self._at(handler, repo, rest)) is None:
            return
        history = []
        while oid:
            commit = repo.commits[oid]
            history.append(
                {
                    "id": oid,
                    "title": commit.title,
                    "message": commit.message,
                    "date": commit.date,
                    "authors": [{"user": "tester"}],
                }
            )
            oid = commit.parent
        self._reply(handler, 200, history)

    def _paths_info(self, handler, method, repo, rest, query, body) -> None:
        if (oid := self._at(handler, repo, rest)) is None:
            return
        files = repo.files_at(oid)
        wanted = (
            json.loads(body).get("paths", []) if body.startswith(b"{") else parse_qs(body.decode()).get("paths", [])
        )
        found = []
        for item in (p.strip("/") for p in wanted):
            if item in files:
                found.append({"type": "file", "oid": files[item].git_oid, "size": len(files[item].data), "path": item})
            elif any(p.startswith(item + "/") for p in files):
                directory = hashlib.sha1(item.encode()).hexdigest()
                found.append({"type": "directory", "oid": directory, "size": 0, "path": item})
        self._reply(handler, 200, found)

    def _preupload(self, handler, method, repo, rest, query, body) -> None:
        if (oid := self._at(handler, repo, rest)) is None:
            return
        files = repo.files_at(oid)
        answers = []
        for item in json.loads(body)["files"]:
            lfs = bool(LFS_PATTERN.search(item["path"]))
            known = files.get(item["path"])
            remote = (known.sha256 if lfs else known.git_oid) if known else None
            answers.append(
                {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": remote}
            )
        self._reply(handler, 200, {"files": answers, "commitOid": oid})

    def _commit_route(self, handler, method, repo, rest, query, body) -> None:
        self._commit(handler, repo, unquote(rest), query, body)

    def _tag_route(self, handler, method, repo, rest, query, body) -> None:
        self._tag(handler, method, repo, unquote(rest), body)

    def _branch(self, handler, method, repo, rest, query, body) -> None:
        name, start = unquote(rest), repo.resolve(json.loads(body or b"{}").get("startingPoint") or "main")
        if name in repo.branches:
            return self._error(handler, 409, f"Branch {name} already exists")
        repo.branches[name] = start
        self._reply(handler, 200, {})

    def _commit(self, handler, repo: Repo, branch: str, query, body: bytes) -> None:
        header, changes = {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = value["content"]
                changes.append(
                    (
                        "put",
                        value["path"],
                        base64.b64decode(content) if value.get("encoding") == "base64" else content.encode(),
                    )
                )
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    return self._error(handler, 400, f"LFS object {value['oid']} was not uploaded")
                changes.append(("put", value["path"], self.lfs[value["oid"]]))
            elif key in ("deletedFile", "deletedFolder"):
                changes.append(("delete", value["path"], None))
        with self.lock:
            parent = repo.resolve(branch)
            if parent is None:
                return self._error(handler, 404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if header.get("parentCommit") and header["parentCommit"] != parent:
                return self._error(handler, 412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.files_at(parent))
            for change, path, data in changes:
                if change == "put":
                    files[path] = Blob(data)
                else:
                    for existing in [p for p in files if p == path or p.startswith(path.rstrip("/") + "/")]:
                        del files[existing]
            oid = repo.commit(parent, header.get("summary", ""), header.get("description", ""), files)
            prefix = "" if repo.kind == "model" else f"{repo.kind}s/"
            answer = {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{oid}"}
            if query.get("create_pr", ["0"])[0] in ("1", "true"):
                repo.pulls.append(oid)
                answer["pullRequestUrl"] = f"{self.url}/{prefix}{repo.repo_id}/discussions/{len(repo.pulls)}"
            else:
                repo.branches[branch] = oid
        self._reply(handler, 200, answer)

    def _tag(self, handler, method, repo: Repo, revision: str, body: bytes) -> None:
        with self.lock:
            if method == "POST":
                tag = json.loads(body or b"{}")["tag"]
                oid = repo.resolve(revision)
                if oid is None:
                    return self._error(handler, 404, "Revision not found", "RevisionNotFound")
                if tag in repo.tags:
                    return self._error(handler, 409, f"Tag {tag} already exists")
                repo.tags[tag] = oid
            elif method == "DELETE" and repo.tags.pop(revision, None) is None:
                return self._error(handler, 404, "Tag not found", "RevisionNotFound")
        self._reply(handler, 200, {})

    def _resolve(self, handler, method, groups, query, body) -> None:
        kind = KINDS[groups[0]] if groups[0] else "model"
        repo_id, revision, path = groups[1], groups[2], unquote(groups[3])
        repo = self._repo(kind, repo_id)
        if repo is None:
            return self._error(handler, 404, "Repository not found", "RepoNotFound")
        oid = repo.resolve(revision)
        if oid is None:
            return self._error(handler, 404, "Revision not found", "RevisionNotFound")
        blob = repo.files_at(oid).get(path)
        if blob is None:
            return self._reply(
                handler,
                404,
                {"error": "Entry not found"},
                headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": oid},
            )
        headers = {"X-Repo-Commit": oid, "ETag": f'"{blob.git_oid}"', "Accept-Ranges": "bytes"}
        if LFS_PATTERN.search(path):
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": len(blob.data)})
        data = blob.data
        span = re.fullmatch(r"bytes=(\d+)-(\d*)", handler.headers.get("Range") or "")
        if span and handler.command == "GET":
            start = int(span.group(1))
            end = int(span.group(2)) if span.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._reply(
                handler, 206, body=data[start : end + 1], headers=headers, content_type="application/octet-stream"
            )
        self._reply(handler, 200, body=data, headers=headers, content_type="application/octet-stream")


_SESSION: HubTestServer | None = None


def session_server() -> HubTestServer:
    """The one server of a test session, started on first use (conftest may be imported twice)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = HubTestServer().__enter__()  # a daemon thread: it stops with the process
    return _SESSION
