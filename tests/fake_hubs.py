"""Fake Hugging Face Hub and ModelScope servers on loopback that keep every uploaded file, for upload tests.

Each implements only the requests `huggingface_hub.HfApi` (whoami, create_repo, upload_folder) and
`modelscope.hub.api.HubApi` (whoami, create_repo, upload_folder) make, as their sources showed them.
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
from fastapi.responses import JSONResponse


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
