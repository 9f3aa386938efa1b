"""`afrocomet serve`: the real server in a subprocess on a free loopback port, a real HTTP client
(urllib): labels equal `afrocomet predict`, every bad request gets its status and one JSON error and
the server keeps answering, SIGTERM mid-load answers every accepted request and exits 0, start-up
errors are one line. The micro-batcher's queue limit and grouping are tested on the batcher itself."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from helpers import COMMAND, WORDS, save_tiny_classifier

TEXTS = [" ".join(WORDS[i:i + 1 + i % 7]) for i in range(len(WORDS))] + [" ".join(WORDS * 40)]  # the last: truncated


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("serve") / "model")


class Server:
    """`afrocomet serve ... --port 0` in a subprocess; its stderr lines collected as they come."""

    def __init__(self, model_dir, *more: str):
        self.proc = subprocess.Popen([*COMMAND, "serve", "--model", str(model_dir), "--port", "0", "--threads", "1",
                                      *more], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        first = self.proc.stderr.readline()
        self.lines.append(first.rstrip("\n"))
        found = re.search(r"on http://127\.0\.0\.1:(\d+);", first)
        assert found, first + self.proc.stderr.read()
        self.url = f"http://127.0.0.1:{found.group(1)}"
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def call(self, path: str, body: bytes | None = None, method: str | None = None, timeout: float = 60):
        """(status, headers, JSON body)."""
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Content-Type": "application/json"} if body is not None else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())

    def predict(self, texts):
        return self.call("/predict", json.dumps({"texts": texts}).encode())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return code


@pytest.fixture(scope="module")
def server(model_dir):
    s = Server(model_dir)
    yield s
    s.stop()


def test_labels_equal_afrocomet_predict(server, model_dir, tmp_path):
    tsv = tmp_path / "in.tsv"
    tsv.write_text("ID\ttweet\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    subprocess.run([*COMMAND, "predict", "--model", str(model_dir), "--input", str(tsv), "--output",
                    str(tmp_path / "out.tsv"), "--threads", "1"], check=True, capture_output=True)
    want = [line.split("\t")[1] for line in (tmp_path / "out.tsv").read_text().splitlines()[1:]]
    status, _, body = server.predict(TEXTS)
    assert status == 200 and [p["label"] for p in body["predictions"]] == want
    for p in body["predictions"]:
        assert set(p["probabilities"]) == {"negative", "neutral", "positive"}
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-6
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)


def test_health_and_info(server):
    assert server.call("/health")[::2] == (200, {"status": "ok"})
    status, _, info = server.call("/info")
    assert status == 200 and info["labels"] == ["negative", "neutral", "positive"] and info["engine"] == "pytorch"
    assert info["threads"] == 1 and info["max_length"] >= 2 and info["limits"]["max_texts"] == 64
    assert (info["http"], info["loop"]) == ("httptools", "uvloop")  # the serve extra's (the test extra has them)
    assert info["batching"]["on"] and info["batching"]["max_batch_texts"] == 32
    assert info["batch_split_cost_tokens"] >= 0  # measured at start-up: micro-batches are cut by length


def _same_answers(a, b) -> bool:
    """Two /predict answers: the same status and labels, probabilities equal to float rounding (batches cut
    otherwise run other shapes)."""
    (status_a, _, body_a), (status_b, _, body_b) = a, b
    pairs = list(zip(body_a["predictions"], body_b["predictions"]))
    close = all(abs(x["probabilities"][k] - y["probabilities"][k]) < 1e-5 for x, y in pairs for k in x["probabilities"])
    return status_a == status_b == 200 and len(pairs) == len(body_b["predictions"]) and close and all(
        x["label"] == y["label"] for x, y in pairs)


def test_the_pure_python_http_stack_answers_the_same(server, model_dir):
    """--pure-python-http: h11 and asyncio (what uvicorn runs on without httptools and uvloop), said in /info;
    the same answers, and the same errors for a bad body. (This server also runs each micro-batch uncut:
    --no-batch-split.)"""
    texts = ["nagode sosai", "ba kyau ba", "a" * 5000]
    pure = Server(model_dir, "--pure-python-http", "--no-batch-split")
    try:
        info = pure.call("/info")[2]
        assert (info["http"], info["loop"]) == ("h11", "asyncio") and info["batch_split_cost_tokens"] is None
        assert _same_answers(pure.predict(texts), server.predict(texts))
        assert pure.call("/predict", b'{"texts": [')[::2] == server.call("/predict", b'{"texts": [')[::2]
    finally:
        assert pure.stop() == 0


BAD = [  # (what, path, body, method, status, words in the error)
    ("not JSON", "/predict", b'{"texts": [', None, 400, "not JSON"),
    ("not UTF-8", "/predict", b'{"texts": ["\xff\xfe"]}', None, 400, "not UTF-8"),
    ("no texts key", "/predict", b'{"text": "a"}', None, 400, "expected a JSON object"),
    ("a list, not an object", "/predict", b'["a"]', None, 400, "expected a JSON object"),
    ("texts not strings", "/predict", b'{"texts": ["a", 3]}', None, 400, "list of strings"),
    ("texts a string", "/predict", b'{"texts": "a"}', None, 400, "list of strings"),
    ("empty list", "/predict", b'{"texts": []}', None, 400, "empty"),
    ("an empty text", "/predict", b'{"texts": ["a", "  "]}', None, 400, "text 1 is empty"),
    ("unknown key", "/predict", b'{"texts": ["a"], "top_k": 2}', None, 400, "unknown key"),
    ("too many texts", "/predict", json.dumps({"texts": ["a"] * 65}).encode(), None, 413, "too many texts: 65"),
    ("a text too long", "/predict", json.dumps({"texts": ["a" * 10_001]}).encode(), None, 413, "10,001 characters"),
    ("unknown route", "/predictions", b"{}", None, 404, "no route /predictions"),
    ("wrong method", "/predict", None, "GET", 405, "GET is not allowed"),
    ("wrong method on health", "/health", b"{}", "POST", 405, "POST is not allowed"),
]


@pytest.mark.parametrize("what,path,body,method,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_its_status_and_one_json_error(server, what, path, body, method, status, words):
    got, _, answer = server.call(path, body, method)
    assert got == status and list(answer) == ["error"] and words in answer["error"], answer
    assert server.predict(["ina son"])[0] == 200  # and the server goes on


def test_one_access_line_per_request(server):
    time.sleep(0.3)  # the lines of earlier requests are in
    before = len(server.lines)
    server.call("/health")
    server.predict(["ina son wannan"])
    time.sleep(0.2)
    new = server.lines[before:]
    assert len(new) == 2 and '"GET /health" 200' in new[0] and '"POST /predict" 200' in new[1], new


def test_sigterm_mid_load_answers_every_accepted_request_and_exits_0(model_dir):
    """After SIGTERM a connection still in the kernel's backlog, or one whose request the server had
    not read yet, is closed unanswered (TCP cannot do otherwise); every request the server took is
    answered. So: no client fails before the signal, and the server's count of answered requests
    equals the 200s the clients got."""
    server = Server(model_dir, "--batch-wait-ms", "20")
    answers, turned_away, failures, stop = [], [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, _, body = server.predict(TEXTS[:5])
                answers.append((status, len(body.get("predictions", []))))
            except OSError:  # refused, reset, broken pipe (URLError is one): not taken, not answered
                turned_away.append(time.monotonic())
                return
            except Exception as exc:
                failures.append(repr(exc))

    clients = [threading.Thread(target=client) for _ in range(8)]
    for c in clients:
        c.start()
    time.sleep(1.5)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.stop()
    stop.set()
    for c in clients:
        c.join(timeout=60)
    served = [a for a in answers if a[0] == 200]
    assert code == 0 and not failures and len(served) == len(answers), (code, failures, server.lines[-3:])
    assert served and all(n == 5 for _, n in served)
    assert all(t >= signalled for t in turned_away)
    assert "stopped (SIGTERM)" in server.lines[-1] and f"answered {len(served)} requests" in server.lines[-1]
    assert sum('"POST /predict" 200' in line for line in server.lines) == len(served)


def test_start_up_errors_are_one_line(model_dir, tmp_path):
    def one_line(*args):
        proc = subprocess.run([*COMMAND, "serve", *args], capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("afrocomet: error: "), proc.stderr
        return lines[0]

    assert "model folder not found" in one_line("--model", str(tmp_path / "nowhere"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"127.0.0.1:{port}: the port is in use" in one_line("--model", str(model_dir), "--port", str(port))
    assert "--queue 8 is below --max-texts 64" in one_line("--model", str(model_dir), "--queue", "8")


# ----------------------------------------------------------------------------- the micro-batcher itself


def _slow_predict(calls, seconds=0.05):
    def predict(texts):
        calls.append(list(texts))
        time.sleep(seconds)
        return np.array([[len(t), 0.0, 1.0] for t in texts], dtype=np.float32), 0
    return predict


def test_requests_within_the_wait_run_as_one_batch_and_each_gets_its_rows():
    from afrocomet.serve.batcher import MicroBatcher

    calls = []

    async def main():
        batcher = MicroBatcher(_slow_predict(calls), max_batch=8, max_wait_ms=50, max_queue=64)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(["a" * (i + 1)] * (i + 1)) for i in range(3)))
        await batcher.stop()
        return results, batcher.stats

    results, stats = asyncio.run(main())
    assert calls == [["a"] + ["aa"] * 2 + ["aaa"] * 3]  # one batch of 6 texts
    assert [r[:, 0].tolist() for r in results] == [[1.0], [2.0, 2.0], [3.0, 3.0, 3.0]]
    assert (stats.batches, stats.requests, stats.texts, stats.waiting_texts) == (1, 3, 6, 0)


def test_a_full_queue_refuses_at_once_and_without_batching_each_request_runs_alone():
    from afrocomet.serve.batcher import MicroBatcher, QueueFull

    calls = []

    async def main():
        batcher = MicroBatcher(_slow_predict(calls, 0.2), max_batch=0, max_wait_ms=0, max_queue=4)
        batcher.start()
        first = [asyncio.ensure_future(batcher.submit(["x", "y"])) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit(["z"])  # 4 texts accepted, not yet answered
        await asyncio.gather(*first)
        assert (await batcher.submit(["z"])).shape == (1, 3)  # room again
        await batcher.stop()
        return batcher.stats

    stats = asyncio.run(main())
    assert calls == [["x", "y"], ["x", "y"], ["z"]] and stats.refused == 1


def test_a_full_queue_is_503_with_retry_after_over_http():
    """The app on a real uvicorn server (in a thread here, so the model can be a slow stand-in): with
    the queue full, a request is answered 503 with Retry-After at once, and is answered again later."""
    import uvicorn

    from afrocomet.serve.app import Limits, build_app
    from afrocomet.serve.batcher import MicroBatcher

    batcher = MicroBatcher(_slow_predict([], 1.0), max_batch=0, max_wait_ms=0, max_queue=2)
    app = build_app(batcher, ("negative", "neutral", "positive"), {"model": "slow"}, Limits.for_texts(2, 100),
                    access_log=None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    client = Server.__new__(Server)
    client.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        busy = threading.Thread(target=client.predict, args=(["a", "b"],))
        busy.start()
        time.sleep(0.3)  # its 2 texts fill the queue while the model runs them
        status, headers, body = client.predict(["c"])
        retry = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        assert status == 503 and retry == "1" and "queue of 2 texts is full" in body["error"]
        busy.join()
        assert client.predict(["c"])[0] == 200
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def test_accepted_connections_have_nagle_off():
    """The listening socket says it is TCP, so asyncio (uvicorn's loop) sets TCP_NODELAY on every connection
    it accepts: a kept-alive client (curl, requests.Session) gets each response's body without waiting
    ~40 ms for a delayed ACK (measured: 52-56 ms a request on one connection before, 8 ms after)."""
    from afrocomet.cli.serve_cmd import bind

    sock = bind("127.0.0.1", 0)
    seen = []

    class Record(asyncio.Protocol):
        def connection_made(self, transport):
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def accept_one():
        server = await asyncio.get_running_loop().create_server(Record, sock=sock)
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    assert sock.proto == socket.IPPROTO_TCP
    asyncio.run(accept_one())
    assert seen and seen[0] != 0


def test_info_names_the_int8_mode_and_a_dynamic_graph_under_batching_is_warned_about(tmp_path):
    """/info's engine says which int8 the export made (parity.json); a dynamic int8 graph, whose labels can
    move with the batch, gets one warning when requests are batched (exports before the mode was recorded
    were all dynamic)."""
    import warnings

    from afrocomet.cli.serve_cmd import _onnx_engine
    from afrocomet.quiet import AfroCometWarning

    def engine(parity, batching=True):
        (tmp_path / "parity.json").write_text(json.dumps(parity), encoding="utf-8")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            name = _onnx_engine(tmp_path, "model.int8.onnx", batching=batching)
        return name, [str(w.message) for w in seen if issubclass(w.category, AfroCometWarning)]

    assert engine({"int8": {"file": "model.int8.onnx", "mode": "static"}}) == ("onnx (model.int8.onnx, static int8)", [])
    name, warned = engine({"int8": {"file": "model.int8.onnx", "mode": "dynamic"}})
    assert name == "onnx (model.int8.onnx, dynamic int8)" and len(warned) == 1 and "--no-batching" in warned[0]
    assert engine({"int8": {"file": "model.int8.onnx"}}, batching=False) == ("onnx (model.int8.onnx, dynamic int8)", [])
    assert engine({"fp32": {"file": "model.onnx"}}) == ("onnx (model.int8.onnx)", [])
    (tmp_path / "parity.json").unlink()
    assert _onnx_engine(tmp_path, "model.onnx", batching=True) == "onnx (model.onnx)"
