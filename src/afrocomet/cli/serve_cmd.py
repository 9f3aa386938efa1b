"""`afrocomet serve`: a saved classifier behind HTTP (the `serve` extra: Starlette on uvicorn).

Start-up errors (a bad model folder, a port in use, the extra missing) are the usual one line and
exit 2, before anything listens. SIGTERM (or Ctrl-C) stops taking new connections, answers every
request already accepted, then exits 0.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
import threading
from pathlib import Path

import click

from afrocomet.errors import AfroCometError

EXTRA = 'pip install -e ".[serve]"'


def _import_stack():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise AfroCometError(f"afrocomet serve needs the serve extra ({exc.name} is not installed): {EXTRA}") from None
    return uvicorn


def http_stack(pure_python: bool = False) -> dict[str, str]:
    """uvicorn's HTTP parser and event loop: httptools and uvloop where the serve extra brought them
    (~30% more requests a second than h11 and asyncio, benchmarks/README.md), else (or `pure_python`)
    the pure-Python ones."""
    from importlib.util import find_spec

    return {"http": "httptools" if not pure_python and find_spec("httptools") else "h11",
            "loop": "uvloop" if not pure_python and sys.platform != "win32" and find_spec("uvloop") else "asyncio"}


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a one-line error."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise AfroCometError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections accepted from a
    # socket that says it is TCP; with Nagle on, a kept-alive client waits ~40 ms for each response's body
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise AfroCometError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


@click.command("serve")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Saved classifier folder, e.g. runs/afrocomet/student (or an exported ONNX folder).")
@click.option("--onnx-file", default=None, help="Run this ONNX file of the folder with ONNX Runtime, "
              "e.g. model.int8.onnx.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port (0: a free one, printed at start).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Most texts run as one micro-batch.")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0, max=1000), default=1.0, show_default=True,
              help="How long the first request of a batch waits for others to join it.")
@click.option("--no-batching", is_flag=True, help="Run every request on its own (no micro-batching).")
@click.option("--no-batch-split", is_flag=True, help="Run each micro-batch as one padded batch, not cut by "
              "length where padding would cost more than another forward (the cost is measured at start-up).")
@click.option("--queue", "queue_texts", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most texts accepted and not yet answered; beyond it requests get 503 with Retry-After.")
@click.option("--max-texts", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most texts in one request (413 beyond).")
@click.option("--max-text-chars", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Most characters in one text (413 beyond); texts are truncated to the model's max length.")
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Tokens per text; longer texts are truncated. Default: the model's limit, at most 512.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of the model (default: the free cores, from the load average).")
@click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with the model folder to run.")
@click.option("--pure-python-http", is_flag=True,
              help="Run uvicorn on h11 and asyncio even where httptools and uvloop are installed (to compare).")
def serve(model_dir, onnx_file, host, port, max_batch, batch_wait_ms, no_batching, no_batch_split, queue_texts,
          max_texts, max_text_chars, max_length, device, threads, trust_remote_code, pure_python_http) -> None:
    """Serve a saved classifier over HTTP: POST /predict, GET /health, GET /info."""
    import torch

    from afrocomet.device import choose_threads
    from afrocomet.predict import open_backend

    uvicorn = _import_stack()
    from afrocomet.serve.app import Limits, build_app, class_probabilities
    from afrocomet.serve.batcher import MicroBatcher

    if queue_texts < max_texts:
        raise AfroCometError(f"--queue {queue_texts} is below --max-texts {max_texts}: a full request could never fit")
    threads = choose_threads(threads)
    torch.set_num_threads(threads)
    backend = open_backend(model_dir, batch_size=max_batch, max_length=max_length, device=device,
                           trust_remote_code=trust_remote_code, onnx_file=onnx_file,
                           split_batches=not (no_batching or no_batch_split))
    sock = bind(host, port)
    batcher = MicroBatcher(class_probabilities(backend.predict), max_batch=0 if no_batching else max_batch,
                           max_wait_ms=0.0 if no_batching else batch_wait_ms, max_queue=queue_texts)
    engine = backend.kind if onnx_file is None else _onnx_engine(Path(model_dir), onnx_file, batching=not no_batching)
    stack = http_stack(pure_python_http)
    cost = None if backend.split_cost is None else round(backend.split_cost, 1)
    info = {"model": str(model_dir), "labels": list(backend.labels), "max_length": backend.max_length,
            "engine": engine, "threads": threads, **stack, "batch_split_cost_tokens": cost}
    app = build_app(batcher, backend.labels, info, Limits.for_texts(max_texts, max_text_chars))
    where = sock.getsockname()
    batching = "off" if no_batching else f"up to {max_batch} texts within {batch_wait_ms:g} ms" + (
        "" if cost is None else f", cut by length (a forward costs {cost:g} token slots)")
    click.echo(f"afrocomet serve: {model_dir} ({engine}, {threads} threads) on http://{where[0]}:{where[1]}; "
               f"micro-batching {batching}", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=60, **stack))
    stopped = _drain_on_signals()
    server.run(sockets=[sock])
    s = batcher.stats
    click.echo(f"afrocomet serve: stopped{' (' + stopped[0] + ')' if stopped else ''}; answered {s.requests} "
               f"requests ({s.texts} texts) in {s.batches} batches, refused {s.refused}", err=True)


def _drain_on_signals() -> list[str]:
    """uvicorn answers SIGTERM and Ctrl-C by draining (no new connections, the accepted ones answered),
    then raises the signal again once its own handlers are gone: these handlers take that second
    one quietly, so a drained server exits 0. Returns the list the signal's name goes into."""
    seen: list[str] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: seen.append(signal.Signals(signum).name))
    return seen


def _onnx_engine(model_dir: Path, onnx_file: str, *, batching: bool) -> str:
    """"onnx (FILE)", with the int8 mode its export recorded (parity.json) when FILE is the int8 graph; a
    warning when a dynamic int8 graph serves batched requests (a text's label may then depend on its batch)."""
    import json

    from afrocomet.quiet import warn

    try:
        int8 = json.loads((model_dir / "parity.json").read_text(encoding="utf-8")).get("int8") or {}
    except (OSError, ValueError, AttributeError):
        int8 = {}
    # exports before static int8 (2026-12-07) were dynamic and did not say so
    mode = int8.get("mode", "dynamic") if isinstance(int8, dict) and int8.get("file") == onnx_file else None
    if mode == "dynamic" and batching:
        warn(f"{onnx_file} is dynamic int8: a text's label may differ with the requests batched beside it; "
             "afrocomet export --int8 (static, the default) or --no-batching gives each text one label")
    return f"onnx ({onnx_file}, {mode} int8)" if mode else f"onnx ({onnx_file})"

