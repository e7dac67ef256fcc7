"""Fake Hugging Face Hub and ModelScope servers on loopback: ones that keep every uploaded file, for upload tests,
and a Hugging Face Hub that serves repositories for download, its large files from a separate CDN host.

Each implements only the requests `huggingface_hub.HfApi` (whoami, create_repo, upload_folder),
`huggingface_hub.snapshot_download` and `modelscope.hub.api.HubApi` (whoami, create_repo, upload_folder) make, as
their sources showed them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response


@dataclass
class FakeHub:
    """What clients sent: repository creations and the files each commit carried."""

    token: str
    fail_commits: int = 0
    """An HTTP status to answer every commit with, as a hub failing mid-upload does (0: commits succeed)."""
    created: list[dict] = field(default_factory=list)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    """repo -> path in repo -> bytes, from successful commits."""
    blobs: dict[str, bytes] = field(default_factory=dict)
    """ModelScope's LFS objects by sha256, uploaded before the commit that names them."""

    def check_token(self, request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise HTTPException(401, "Invalid credentials in Authorization header")


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run `app` with uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def hugging_face_app(hub: FakeHub) -> FastAPI:
    """The Hub's /api routes behind HfApi.whoami, create_repo and upload_folder; every file is committed inline."""
    app = FastAPI(dependencies=[Depends(hub.check_token)])

    @app.get("/api/whoami-v2")
    def whoami():
        return {"type": "user", "name": "tester", "orgs": [{"name": "my-org"}]}

    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        body = await request.json()
        hub.created.append(body)
        repo = f"{body['organization']}/{body['name']}"
        if repo in hub.files:
            return JSONResponse({"error": "You already created this model repo"}, 409)
        hub.files[repo] = {}
        return {"url": f"{request.base_url}{repo}"}

    @app.post("/api/validate-yaml")
    def validate_yaml():
        return {}

    @app.post("/api/models/{owner}/{name}/preupload/{revision}")
    async def preupload(owner: str, name: str, revision: str, request: Request):
        files = (await request.json())["files"]  # "regular" keeps LFS and Xet out: contents come in the commit
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}

    @app.post("/api/models/{owner}/{name}/commit/{revision}")
    async def commit(owner: str, name: str, revision: str, request: Request):
        if hub.fail_commits:
            return JSONResponse({"error": "Commit failed"}, hub.fail_commits)
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        for line in lines:
            if line["key"] != "header":
                assert line["key"] == "file" and line["value"]["encoding"] == "base64", line
                hub.files[f"{owner}/{name}"][line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        return {"commitUrl": f"{request.base_url}{owner}/{name}/commit/{'0' * 40}", "commitOid": "0" * 40}

    return app


def modelscope_app(hub: FakeHub) -> FastAPI:
    """ModelScope's routes behind HubApi.whoami, create_repo and upload_folder: small files inline in the commit,
    weights as LFS objects PUT to the address the batch call hands out."""
    app = FastAPI(dependencies=[Depends(hub.check_token)])

    @app.get("/openapi/v1/users/me")
    def whoami():
        return {"success": True, "data": {"username": "tester"}}

    @app.post("/api/v1/models")
    async def create_repo(request: Request):
        body = await request.json()
        hub.created.append(body)
        repo = f"{body['Path']}/{body['Name']}"
        if repo in hub.files:
            return JSONResponse({"Code": 409, "Message": f"model {repo} already exists", "Success": False}, 409)
        hub.files[repo] = {}
        return {"Code": 200, "Data": {"Path": body["Path"], "Name": body["Name"]}, "Success": True}

    @app.post("/api/v1/repos/models/{owner}/{name}/info/lfs/objects/batch")
    async def lfs_batch(owner: str, name: str, request: Request):
        wanted = [o for o in (await request.json())["objects"] if o["oid"] not in hub.blobs]
        return {"Code": 200, "Success": True, "Data": {"objects": [
            {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{request.base_url}lfs/{o['oid']}"}}}
            for o in wanted]}}

    @app.put("/lfs/{oid}")
    async def lfs_upload(oid: str, request: Request):
        data = await request.body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HTTPException(400, "content does not match its sha256")
        hub.blobs[oid] = data
        return {"Code": 200, "Success": True}

    @app.post("/api/v1/repos/models/{owner}/{name}/commit/{revision}")
    async def commit(owner: str, name: str, revision: str, request: Request):
        if hub.fail_commits:
            return JSONResponse({"Code": hub.fail_commits, "Message": "Commit failed", "Success": False},
                                hub.fail_commits)
        for action in (await request.json())["actions"]:
            data = hub.blobs[action["sha256"]] if action["type"] == "lfs" else base64.b64decode(action["content"])
            hub.files[f"{owner}/{name}"][action["path"]] = data
        return {"Code": 200, "Success": True, "Data": {"CommitId": "0" * 40}}

    return app


COMMIT = "7d1c0f3e5b2a4968a0c1e2f3a4b5c6d7e8f90123"
LFS_FROM = 1024
"""Files this large or larger are stored in LFS, as the Hub does with weights: the repository holds a pointer."""


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


@dataclass
class ServedRepos:
    """Repositories a fake Hub serves for download, and the requests it answered."""

    repos: dict[str, dict[str, bytes]]
    """"models/org/name" or "datasets/org/name" -> path in repo -> bytes."""
    cdn: str = ""
    """Base URL of the CDN app that serves LFS files by sha256; set once it runs."""
    requests: list[str] = field(default_factory=list)
    """"METHOD path" of every request the Hub and the CDN answered."""


def download_hub_app(served: ServedRepos) -> FastAPI:
    """The Hub's routes behind `snapshot_download`: repo info (its commit), the recursive tree (LFS files with their
    sha256), and /resolve/, which answers a small file itself (ETag: its git blob id) and redirects a large one to the
    CDN with the headers the client reads off the redirect (X-Linked-Etag: its sha256, X-Linked-Size, X-Repo-Commit)."""
    app = FastAPI()

    @app.middleware("http")
    async def record(request: Request, call_next):
        served.requests.append(f"{request.method} {request.url.path}")
        return await call_next(request)

    def repo(kind: str, owner: str, name: str) -> dict[str, bytes]:
        files = served.repos.get(f"{kind}/{owner}/{name}")
        if files is None:
            raise HTTPException(404, "Repository not found", headers={"X-Error-Code": "RepoNotFound"})
        return files

    @app.get("/api/{kind}/{owner}/{name}")
    @app.get("/api/{kind}/{owner}/{name}/revision/{revision}")
    def repo_info(kind: str, owner: str, name: str, revision: str = "main"):
        files = repo(kind, owner, name)
        return {"id": f"{owner}/{name}", "sha": COMMIT, "private": False,
                "siblings": [{"rfilename": path} for path in files]}

    @app.get("/api/{kind}/{owner}/{name}/tree/{revision}")
    def tree(kind: str, owner: str, name: str, revision: str):
        entries = []
        for path, data in repo(kind, owner, name).items():
            if len(data) >= LFS_FROM:
                pointer = lfs_pointer(data)
                entries.append({"type": "file", "path": path, "size": len(data), "oid": git_blob_id(pointer),
                                "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                        "pointerSize": len(pointer)}})
            else:
                entries.append({"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)})
        return entries

    def resolve(request: Request, owner: str, name: str, revision: str, path: str, kind: str = "models"):
        data = repo(kind, owner, name).get(path)
        if data is None:
            raise HTTPException(404, "Entry not found", headers={"X-Error-Code": "EntryNotFound"})
        if len(data) >= LFS_FROM:
            sha256 = hashlib.sha256(data).hexdigest()
            return Response(status_code=302, headers={
                "Location": f"{served.cdn}/lfs/{sha256}", "X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_id(lfs_pointer(data))}"',
                "Content-Length": "0"})
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{git_blob_id(data)}"', "Content-Length": str(len(data))}
        return Response(b"" if request.method == "HEAD" else data, headers=headers)

    @app.api_route("/{owner}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve_model_file(request: Request, owner: str, name: str, revision: str, path: str):
        return resolve(request, owner, name, revision, path)

    @app.api_route("/datasets/{owner}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve_dataset_file(request: Request, owner: str, name: str, revision: str, path: str):
        return resolve(request, owner, name, revision, path, kind="datasets")

    return app


def cdn_app(served: ServedRepos) -> FastAPI:
    """The storage host that /resolve/ redirects large files to: their bytes by sha256."""
    app = FastAPI()
    blobs = {hashlib.sha256(d).hexdigest(): d for files in served.repos.values() for d in files.values()}

    @app.api_route("/lfs/{sha256}", methods=["GET", "HEAD"])
    def blob(request: Request, sha256: str):
        served.requests.append(f"{request.method} /lfs/{sha256}")
        data = blobs[sha256]
        return Response(b"" if request.method == "HEAD" else data, headers={"Content-Length": str(len(data))},
                        media_type="application/octet-stream")

    return app
