"""The HTTP application of `afrocomet serve` (Starlette): three routes, strict request checks, JSON
errors, one access-log line per request.

    POST /predict  {"texts": ["...", ...]} -> {"predictions": [{"label": ..., "probabilities": {...}}, ...]}
    GET  /health   -> {"status": "ok"}
    GET  /info     -> the model, its labels, max length, engine, threads and the server's limits

Every error is one JSON object `{"error": "<what>"}` with its status: 400 (not JSON, not UTF-8,
wrong types, an empty list or text), 413 (too many texts, a text or a body over the limits in /info),
404 and 405 (unknown route or method), 503 with Retry-After (the queue is full), 500 (the model
failed: the server goes on). Texts longer than the model's max length are truncated, as in
`afrocomet predict`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from afrocomet.serve.batcher import MicroBatcher, Predict, QueueFull


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # per request
    max_text_chars: int = 10_000  # per text (it is truncated to max_length tokens anyway)
    max_body_bytes: int = 4 * 1024 * 1024

    @staticmethod
    def for_texts(max_texts: int, max_text_chars: int) -> "Limits":
        """The body limit that the text limits imply (4 UTF-8 bytes a character, JSON's quoting)."""
        return Limits(max_texts, max_text_chars, max_texts * (6 * max_text_chars + 8) + 1024)


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def read_texts(body: bytes, limits: Limits) -> list[str]:
    """The request's texts, or BadRequest saying what is wrong with the body."""
    if len(body) > limits.max_body_bytes:
        raise BadRequest(413, f"request body of {len(body):,} bytes is over the limit of {limits.max_body_bytes:,}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"request body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(400, f"request body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict) or "texts" not in data:
        raise BadRequest(400, 'expected a JSON object {"texts": ["...", ...]}')
    unknown = sorted(set(data) - {"texts"})
    if unknown:
        raise BadRequest(400, f"unknown key(s) {', '.join(map(repr, unknown))}: the body holds only 'texts'")
    texts = data["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest(400, "'texts' must be a list of strings")
    if not texts:
        raise BadRequest(400, "'texts' is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise BadRequest(413, f"too many texts: {len(texts)} (at most {limits.max_texts} a request, see /info)")
    for i, t in enumerate(texts):
        if not t.strip():
            raise BadRequest(400, f"text {i} is empty (as in `afrocomet predict`, every text needs a word)")
        if len(t) > limits.max_text_chars:
            raise BadRequest(413, f"text {i} has {len(t):,} characters (at most {limits.max_text_chars:,}, see /info)")
    return texts


def class_probabilities(predict: Predict) -> Predict:
    """`predict` with class probabilities (float64 softmax) for rows instead of logits, computed once a
    batch in the model's thread: the server's batcher runs this, so a request's answer is only its rows."""

    def run(texts):
        logits, truncated = predict(texts)
        shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True), truncated

    return run


def predictions(probs: np.ndarray, labels: tuple[str, ...]) -> list[dict]:
    """Each row's label (the most probable class: the logits' argmax, as `afrocomet predict` writes it)
    and its class probabilities."""
    return [{"label": labels[k], "probabilities": dict(zip(labels, row))}
            for k, row in zip(probs.argmax(axis=1).tolist(), probs.tolist())]


class AccessLog:
    """ASGI middleware: one line per HTTP request on stderr, `afrocomet serve: <client> "<method> <path>"
    <status> <ms> ms`."""

    def __init__(self, app, write: Callable[[str], None]):
        self.app, self.write = app, write

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            self.write(f'afrocomet serve: {client[0]} "{scope["method"]} {scope["path"]}" {status[0]} '
                       f"{1000 * (time.perf_counter() - start):.1f} ms")


def _stderr_line(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def build_app(batcher: MicroBatcher, labels: tuple[str, ...], info: dict, limits: Limits, *,
              access_log: Callable[[str], None] | None = _stderr_line) -> Starlette:
    """The application; `info` is what GET /info says about the model (the limits are added). The
    batcher's rows are class probabilities (it runs `class_probabilities(predict)`)."""

    async def predict(request: Request):
        try:
            texts = read_texts(await request.body(), limits)
            probs = await batcher.submit(texts)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except QueueFull:
            return error(503, f"the server is busy (its queue of {batcher.max_queue} texts is full): retry",
                         headers={"Retry-After": "1"})
        except Exception as exc:  # the model failed on this batch: this answer says so, the server goes on
            return error(500, f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}")
        return JSONResponse({"predictions": predictions(probs, labels)})

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def describe(request: Request):
        return JSONResponse({**info, "limits": asdict(limits), "batching": {
            "on": batcher.batching, "max_batch_texts": batcher.max_batch, "max_wait_ms": 1000 * batcher.max_wait,
            "queue_texts": batcher.max_queue}, "served": asdict(batcher.stats)})

    async def http_error(request: Request, exc: HTTPException):
        message = {404: f"no route {request.url.path} (routes: POST /predict, GET /health, GET /info)",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
        return error(exc.status_code, message, headers=exc.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:  # the server stopped taking requests and answered those it had: end the worker
            await batcher.stop()

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health, methods=["GET"]),
                            Route("/info", describe, methods=["GET"])],
                    exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    if access_log is not None:
        app.add_middleware(AccessLog, write=access_log)
    return app
