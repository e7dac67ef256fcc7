"""The HTTP router: OpenAI routes over the serving layer, API keys, health while draining, and every error as
OpenAI's error JSON."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import weakref

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from tunestack.serve.chat import ChatCompletion, render_chat
from tunestack.serve.completions import Completion
from tunestack.serve.errors import ServeError, Unauthorized, error_body
from tunestack.serve.limits import BodyLimit, TrackRequests
from tunestack.serve.protocol import ChatCompletionRequest, CompletionRequest, FieldError
from tunestack.serve.serving import Serving

logger = logging.getLogger("tunestack.serve")


def build_app(serving: Serving, api_keys: list[str] = ()) -> FastAPI:
    app = FastAPI(title="tunestack", docs_url=None, redoc_url=None, openapi_url=None)
    keys = [_digest(k) for k in api_keys]

    def check_key(request: Request) -> None:
        if not keys:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        digest = _digest(given.strip())
        matches = [hmac.compare_digest(digest, k) for k in keys]  # every key compared: no early exit
        if scheme.lower() != "bearer" or not any(matches):
            raise Unauthorized("Missing or wrong API key: send the header `Authorization: Bearer KEY`.")

    router = APIRouter(dependencies=[Depends(check_key)])

    @router.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        inputs = await render_chat(serving, body)  # images are read off the event loop
        return await _answer(ChatCompletion(serving, body, inputs), body.stream, request)

    @router.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await _answer(Completion(serving, body), body.stream, request)

    @router.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": serving.created, "owned_by": "tunestack",
             "root": serving.model_name, "parent": None if name == serving.model_name else serving.model_name}
            for name in serving.model_names()]}

    @router.get("/metrics")
    async def metrics():
        return Response(serving.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health():
        if serving.draining:  # load balancers stop sending requests here; running ones finish
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok"}

    app.include_router(router)
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, limit=serving.limits.max_request_bytes)
    app.add_middleware(TrackRequests, serving=serving)
    return app


def _digest(key: str) -> bytes:
    """Keys are compared as SHA-256 digests, whose equal lengths keep the comparison's time independent of the key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


async def _answer(job, stream: bool, request: Request):
    if stream:  # starlette stops the stream when the client goes; closing it cancels the generation
        body = job.stream()
        weakref.finalize(body, job.admission.release)  # even if the client left before the stream started
        return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    task = asyncio.ensure_future(job.response())
    while not task.done():
        await asyncio.wait([task], timeout=0.25)
        if not task.done() and await request.is_disconnected():
            task.cancel()  # frees the slot; nobody is left to answer
            return Response(status_code=499)
    return task.result()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError):
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse(error_body(str(exc), exc.type, exc.param), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems, params = [], []
        for error in exc.errors():
            refused = error.get("ctx", {}).get("error")
            if isinstance(refused, FieldError):  # a check of the protocol models, which names its own field
                problems.append(str(refused))
                params.append(refused.field.split(".")[0])
                continue
            where = ".".join(str(p) for p in error.get("loc", ())[1:]) or "body"
            invalid_json = error.get("type") == "json_invalid"
            problems.append("body: not valid JSON" if invalid_json else f"{where}: {error['msg']}")
            if len(error.get("loc", ())) > 1 and not invalid_json:  # a JSON error's location is a byte offset
                params.append(str(error["loc"][1]))
        return JSONResponse(error_body("; ".join(problems), "invalid_request_error", next(iter(params), None)),
                            status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        logger.exception("request failed")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"),
                            status_code=500)
