"""`afrocomet serve` under load: throughput, latency percentiles and errors, side by side in one run.

Each row starts the real server (`afrocomet serve --port 0`, a subprocess on loopback), lets a fixed
number of concurrent clients (coroutines, each on one kept-alive HTTP/1.1 connection, one tweet a
request, real AfriSenti test tweets) send for a fixed time after a short warm-up, then stops them and
the server (SIGTERM: it must exit 0). In the first round, the same server's labels on check tweets are
then compared with `afrocomet predict` on the same tweets. Every row runs once a round, the rows
interleaved, for `--rounds` rounds; each row reports its median round (one server's throughput under
this load moved by up to nearly 2x between runs on a shared 2-core machine).

Rows: the student in PyTorch fp32 and ONNX int8 (exported here), each with micro-batching on (the
server's default wait) and off, the PyTorch student at each of `--batch-waits`, and with batching on
uvicorn's pure-Python HTTP parser and loop (h11, asyncio) beside httptools and uvloop; the run's
teacher served the same way, and batching with each micro-batch uncut (`--no-batch-split`); with
--presets, the `comet` (batching on and off) and `afroxlmr-large` presets with random weights (the run's
tokenizer), for the served-throughput ratio.

    python benchmarks/serve_load.py --run runs/afrocomet                       # student and teacher of a run
    python benchmarks/serve_load.py --run runs/afrocomet --presets --readme    # + comet vs AfroXLMR-Large
    python benchmarks/serve_load.py --run runs/afrocomet --seconds 5 --rounds 1 --rows student   # a look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, now, table, write_json  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"
README = Path(__file__).resolve().parent / "README.md"
COMMAND = [sys.executable, "-m", "afrocomet"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a finished run folder (its student/ and teacher/)")
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=10.0, help="load time per row and round (after the warm-up)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all rows (interleaved); a row reports its "
                   "median round (by throughput)")
    p.add_argument("--batch-waits", default="0,1,2,5", help="extra rows: the PyTorch student with batching "
                   "and each of these --batch-wait-ms ('' for none)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1, help="the server's model threads (the clients use the rest)")
    p.add_argument("--check", type=int, default=100, help="test tweets whose labels are compared with predict")
    p.add_argument("--rows", default="student,onnx,teacher", help="which rows: student, onnx, teacher")
    p.add_argument("--presets", action="store_true", help="also comet vs afroxlmr-large, random weights")
    p.add_argument("--json", type=Path, default=Path("/tmp/afrocomet-serve-load.json"))
    p.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md")
    return p.parse_args()


def tweets(data_dir: Path) -> list[str]:
    """Every test tweet of the five languages, in a fixed interleaved order."""
    per = []
    for lang in ("hau", "ibo", "kin", "swa", "yor"):
        lines = (data_dir / lang / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
        per.append([line.split("\t")[0] for line in lines if line.split("\t")[0].strip()])
    return [t for group in zip(*per) for t in group]


class Server:
    def __init__(self, model: Path, *more: str, threads: int):
        self.proc = subprocess.Popen([*COMMAND, "serve", "--model", str(model), "--port", "0", "--threads",
                                      str(threads), *more], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        first = self.proc.stderr.readline()
        found = re.search(r"on http://([\d.]+):(\d+);", first)
        if not found:
            raise SystemExit(f"the server did not start: {first}{self.proc.stderr.read()}")
        self.url = f"http://{found.group(1)}:{found.group(2)}"
        self.tail: list[str] = []
        threading.Thread(target=lambda: [self.tail.append(x) for x in self.proc.stderr], daemon=True).start()

    def predict(self, texts: list[str], timeout: float = 600) -> tuple[int, dict]:
        body = json.dumps({"texts": texts}).encode()
        request = urllib.request.Request(self.url + "/predict", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def labels(self, texts: list[str]) -> list[str]:
        """The served labels of `texts`, in requests of at most the server's per-request limit (/info);
        any answer but 200 ends the benchmark."""
        with urllib.request.urlopen(self.url + "/info", timeout=60) as response:
            per_request = json.loads(response.read())["limits"]["max_texts"]
        out = []
        for i in range(0, len(texts), per_request):
            status, body = self.predict(texts[i:i + per_request])
            if status != 200:
                raise SystemExit(f"the label check got {status}: {body}")
            out += [p["label"] for p in body["predictions"]]
        return out

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system; Linux's /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def load(server: Server, texts: list[str], clients: int, seconds: float, warmup: float) -> dict:
    """`clients` concurrent clients, one tweet a request, for warmup + seconds; only requests started
    after the warm-up count. Every non-200 answer or failed connection is an error.

    The clients are coroutines on one event loop (uvloop where installed), each on its own kept-alive
    HTTP/1.1 connection with Nagle off (as urllib3 and curl set it), writing each request in one piece
    and reading the answer by its Content-Length: a load generator that leaves the server the CPU (16
    threads of `http.client` used 4x as much: 0.36 of a core at 1,600 requests a second, against 0.09)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    done: list[tuple[float, float]] = []  # (started, latency)
    errors: list[str] = []
    head = f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n".encode()

    async def connect():
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def ask(reader, writer, text: str) -> bool:
        body = json.dumps({"texts": [text]}).encode()
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer)
        got = json.loads(await reader.readexactly(int(length.group(1))))
        return answer[9:12] == b"200" and len(got.get("predictions", [])) == 1

    async def client(k: int, start: float, end: float):
        i, (reader, writer) = k, await connect()
        while (began := time.perf_counter()) < end:
            try:
                ok, kind = await ask(reader, writer, texts[i % len(texts)]), "not 200"
            except Exception as exc:  # a refused or dropped connection: the next request opens a new one
                ok, kind = False, repr(exc)
                writer.close()
                reader, writer = await connect()
            if began >= start:
                (done.append((began, time.perf_counter() - began)) if ok else errors.append(kind))
            i += clients
        writer.close()

    async def all_clients():
        t0 = time.perf_counter()
        await asyncio.gather(*(client(k, t0 + warmup, t0 + warmup + seconds) for k in range(clients)))

    cpu = (time.process_time(), server.cpu_seconds())
    try:
        import uvloop
        uvloop.run(all_clients())
    except ImportError:
        asyncio.run(all_clients())
    client_cpu, server_cpu = time.process_time() - cpu[0], server.cpu_seconds() - cpu[1]
    lat = sorted(x[1] for x in done)

    def pct(q: float) -> float | None:
        return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

    return {"requests": len(done), "errors": len(errors), "error_kinds": sorted(set(errors))[:5],
            "throughput_rps": round(len(done) / seconds, 1), "p50_ms": pct(0.50), "p95_ms": pct(0.95),
            "p99_ms": pct(0.99), "server_cpu_s": round(server_cpu, 1), "client_cpu_s": round(client_cpu, 1)}


def predict_labels(model: Path, texts: list[str], more: list[str], work: Path) -> list[str]:
    tsv, out = work / "check.tsv", work / "check.out.tsv"
    tsv.write_text("ID\ttweet\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
    subprocess.run([*COMMAND, "predict", "--model", str(model), "--input", str(tsv), "--output", str(out), *more],
                   check=True, capture_output=True)
    return [line.split("\t")[1] for line in out.read_text(encoding="utf-8").splitlines()[1:]]


def onnx_folder(student: Path, work: Path) -> Path:
    out = work / "student-onnx"
    subprocess.run([*COMMAND, "export", "--model", str(student), "--onnx", "--int8", "--out", str(out)], check=True,
                   capture_output=True)
    return out


def preset_folder(preset: str, tokenizer_from: Path, work: Path) -> Path:
    """A preset classifier with random weights and the run's tokenizer, saved as a folder."""
    from transformers import AutoTokenizer

    from afrocomet.bench import random_weights_model
    from afrocomet.quiet import no_progress_bars

    tok = AutoTokenizer.from_pretrained(tokenizer_from, trust_remote_code=False)
    model = random_weights_model(preset, "classification", vocab_size=len(tok))
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    out = work / preset
    with no_progress_bars():
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return out


def rows_to_run(args: argparse.Namespace, work: Path) -> list[tuple[str, Path, list[str]]]:
    student, teacher, wanted = args.run / "student", args.run / "teacher", args.rows.split(",")
    rows = []
    if "student" in wanted:
        rows += [("student, pytorch fp32, batching", student, []),
                 ("student, pytorch fp32, one at a time", student, ["--no-batching"]),
                 ("student, pytorch fp32, batching, h11+asyncio", student, ["--pure-python-http"])]
        rows += [(f"student, pytorch fp32, batching, wait {w:g} ms", student, ["--batch-wait-ms", f"{w:g}"])
                 for w in map(float, filter(None, args.batch_waits.split(",")))]
    if "onnx" in wanted:
        onnx = onnx_folder(student, work)
        rows += [("student, onnx int8, batching", onnx, ["--onnx-file", "model.int8.onnx"]),
                 ("student, onnx int8, one at a time", onnx, ["--onnx-file", "model.int8.onnx", "--no-batching"])]
    if "teacher" in wanted:
        rows += [("teacher, pytorch fp32, batching", teacher, []),
                 ("teacher, pytorch fp32, batching, uncut", teacher, ["--no-batch-split"]),
                 ("teacher, pytorch fp32, one at a time", teacher, ["--no-batching"])]
    if args.presets:
        comet = preset_folder("comet", student, work)
        rows += [("comet (random weights), batching", comet, []),
                 ("comet (random weights), one at a time", comet, ["--no-batching"]),
                 ("afroxlmr-large (random weights), batching", preset_folder("afroxlmr-large", student, work), [])]
    return rows


def main() -> None:
    args = parse_args()
    texts = tweets(args.data_dir)
    check = texts[:args.check]
    with tempfile.TemporaryDirectory(prefix="afrocomet-serve-load-") as tmp:
        work = Path(tmp)
        rows = rows_to_run(args, work)
        rounds: dict[str, list[dict]] = {name: [] for name, _, _ in rows}
        for k in range(args.rounds):
            for name, model, more in rows:
                rounds[name].append(one_round(name, model, more, texts, check if k == 0 else [], args, work))
                print(json.dumps({"round": k + 1, **rounds[name][-1]}), flush=True)
    results = [median_round(r) for r in rounds.values()]
    summary = {"date": now(), "machine": machine(), "clients": args.clients, "seconds": args.seconds,
               "rounds": args.rounds, "threads": args.threads,
               "command_line": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
               "rows": results, "every_round": rounds, "ratios": ratios(results)}
    columns = ["row", "throughput_rps", "p50_ms", "p95_ms", "p99_ms", "requests", "errors", "labels_same",
               "server_cpu_s", "client_cpu_s", "rounds_rps"]
    summary["table"] = table(results, columns)
    print(summary["table"], "\n", json.dumps(summary["ratios"], indent=1))
    write_json(args.json, summary)
    if args.readme:
        write_readme(summary)


def one_round(name: str, model: Path, more: list[str], texts: list[str], check: list[str],
              args: argparse.Namespace, work: Path) -> dict:
    """One row's server under the load, then (where `check` has tweets) its labels against `predict`."""
    server = Server(model, *more, threads=args.threads)
    measured = load(server, texts, args.clients, args.seconds, args.warmup)
    served = server.labels(check) if check else []
    row = {"row": name, **measured, "exit_code": server.stop()}
    if check:
        onnx = [m for m in more if m.endswith(".onnx")]
        want = predict_labels(model, check, ["--threads", str(args.threads)]
                              + (["--onnx-file", onnx[0]] if onnx else []), work)
        row.update(labels_same=sum(a == b for a, b in zip(served, want)), labels_checked=len(want))
    return row


def median_round(rounds: list[dict]) -> dict:
    """The round of median throughput, with the label check of the first, every round's throughput, the
    sum of errors and the worst exit code."""
    middle = sorted(rounds, key=lambda r: r["throughput_rps"])[(len(rounds) - 1) // 2]
    return {**middle, "labels_same": rounds[0].get("labels_same"), "labels_checked": rounds[0].get("labels_checked"),
            "errors": sum(r["errors"] for r in rounds), "exit_code": max((r["exit_code"] for r in rounds), key=abs),
            "rounds_rps": "/".join(f"{r['throughput_rps']:.0f}" for r in rounds)}


def ratios(rows: list[dict]) -> dict:
    by = {r["row"]: r["throughput_rps"] for r in rows}

    def ratio(a: str, b: str) -> float | None:
        return round(by[a] / by[b], 2) if by.get(a) and by.get(b) else None

    return {"batching / one at a time, student pytorch": ratio("student, pytorch fp32, batching",
                                                               "student, pytorch fp32, one at a time"),
            "batching / one at a time, student onnx int8": ratio("student, onnx int8, batching",
                                                                 "student, onnx int8, one at a time"),
            "httptools+uvloop / h11+asyncio, student pytorch, batching": ratio(
                "student, pytorch fp32, batching", "student, pytorch fp32, batching, h11+asyncio"),
            "batching / one at a time, teacher": ratio("teacher, pytorch fp32, batching",
                                                       "teacher, pytorch fp32, one at a time"),
            "batching cut by length / uncut, teacher": ratio("teacher, pytorch fp32, batching",
                                                              "teacher, pytorch fp32, batching, uncut"),
            "batching / one at a time, comet": ratio("comet (random weights), batching",
                                                     "comet (random weights), one at a time"),
            "student / teacher, pytorch, batching": ratio("student, pytorch fp32, batching",
                                                          "teacher, pytorch fp32, batching"),
            "comet / afroxlmr-large, batching": ratio("comet (random weights), batching",
                                                      "afroxlmr-large (random weights), batching")}


def write_readme(summary: dict) -> None:
    text = README.read_text(encoding="utf-8")
    cores = summary["machine"].get("cpu_count")
    section = (f"## serve_load.py\n\n`{summary['command_line']}` ({summary['date']}, {cores} "
               f"cores; {summary['clients']} clients for {summary['seconds']:g} s a row in each of "
               f"{summary['rounds']} interleaved rounds, each row's median round shown, one tweet a request, the "
               f"server's model on {summary['threads']} thread(s)):\n\n```\n{summary['table']}\n```\n\nRatios: "
               + ", ".join(f"{k} {v}" for k, v in summary["ratios"].items()) + "\n")
    start = text.find("## serve_load.py")
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[nxt + 1:] if nxt >= 0 else "")
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
