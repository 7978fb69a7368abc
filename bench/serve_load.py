"""Load on ``viewfinder serve``: N concurrent clients for S seconds, zero errors expected; QPS and latency.

    python bench/serve_load.py [--model DIR] [--clients 8] [--seconds 30] [--json]

Builds a library of the sample photos (``data/``) with the real CLI (``--model``: a checkpoint folder,
default the tiny random CLIP of ``tests/tiny_model.py``; ``bench/checkpoint.py`` makes a ViT-B/32-sized
one), starts the real server as a subprocess on a free port, and runs the clients: each keeps one
HTTP/1.1 connection and cycles through text searches and similar-by-path queries.

Baseline in the same run: the same query mix answered in this process (``Searcher.run``, one thread).
Reported: QPS and p50/p99 for 1 client and for N clients, errors, and the ratios
``qps_n / qps_inprocess`` and ``p50_1client / p50_inprocess`` (the HTTP + JSON overhead).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

TEXTS = ("a horse in a field", "a cup of coffee", "an astronaut", "a cat", "a clock", "a camera")


def bodies(paths: list[str]) -> list[tuple[str, bytes]]:
    """The query mix: (endpoint, JSON body), texts and indexed paths alternating."""
    out: list[tuple[str, bytes]] = []
    for i in range(max(len(TEXTS), len(paths))):
        out.append(("/search", json.dumps({"text": TEXTS[i % len(TEXTS)], "k": 20}).encode()))
        if paths:
            out.append(("/similar", json.dumps({"path": paths[i % len(paths)], "k": 20}).encode()))
    return out


def hammer(url: str, *, paths: list[str], clients: int, seconds: float, token: str | None = None) -> dict[str, Any]:
    """``clients`` threads, each with one keep-alive connection, for ``seconds``; every non-200 answer or
    failed request is an error. Returns requests, errors, qps and latency percentiles (ms)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    mix = bodies(paths)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    stop_at = time.perf_counter() + seconds
    barrier = threading.Barrier(clients)

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=60)
        barrier.wait()
        i = n
        while time.perf_counter() < stop_at:
            path, body = mix[i % len(mix)]
            i += 1
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200 or not json.loads(data)["hits"]:
                    errors.append(f"{path}: HTTP {response.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException, ValueError) as err:
                errors.append(f"{path}: {type(err).__name__}: {err}")
                conn.close()
                conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=60)
                continue
            latencies[n].append(time.perf_counter() - started)
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    flat = sorted(x for per in latencies for x in per)
    return {
        "clients": clients,
        "seconds": round(wall, 3),
        "requests": len(flat) + len(errors),
        "errors": len(errors),
        "first_errors": errors[:3],
        "qps": round(len(flat) / wall, 1),
        "p50_ms": _pct(flat, 50),
        "p99_ms": _pct(flat, 99),
        "max_ms": round(flat[-1] * 1000, 2) if flat else None,
    }


def _pct(sorted_s: list[float], q: float) -> float | None:
    if not sorted_s:
        return None
    return round(sorted_s[min(len(sorted_s) - 1, int(round(q / 100 * (len(sorted_s) - 1))))] * 1000, 2)


def in_process(home: Path, model: str, paths: list[str], seconds: float) -> dict[str, Any]:
    """The baseline: the same mix through ``Searcher.run`` in this process, one thread."""
    from search.encoder import Encoder
    from search.library import Library
    from search.query import Query, Term
    from search.searcher import Searcher

    searcher = Searcher(Library.open(home), Encoder.load(model, "cpu"))
    queries = [
        Query(terms=(Term(kind="text" if path == "/search" else "image", value=json.loads(body).get("text") or json.loads(body)["path"]),), k=20)
        for path, body in bodies(paths)
    ]
    searcher.run(queries[0])
    times: list[float] = []
    stop_at = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        searcher.run(queries[i % len(queries)])
        times.append(time.perf_counter() - started)
        i += 1
    times.sort()
    return {"queries": len(times), "qps": round(len(times) / sum(times), 1), "p50_ms": _pct(times, 50), "p99_ms": _pct(times, 99)}


def start_server(home: Path, log: Path, timeout: float = 300) -> tuple[subprocess.Popen[bytes], str]:
    from ui import serverfile

    script = Path(sys.executable).with_name("viewfinder")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(script), "serve", "--home", str(home), "--port", "0", "--no-access-log"], stdout=fh, stderr=fh)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = serverfile.read(home)
        if info is not None and info.pid == proc.pid:
            return proc, info.url
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def main(argv: list[str] | None = None) -> None:
    from common import log, machine  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(description="Concurrent clients on viewfinder serve: QPS, p99, errors.")
    parser.add_argument("--model", help="checkpoint folder (default: the tiny random CLIP of tests/tiny_model.py)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="viewfinder-bench-serve-"))
    try:
        model = args.model
        if model is None:
            from tiny_model import build_tiny_clip  # type: ignore[import-not-found]

            model = str(build_tiny_clip(work / "tiny-clip", seed=0))
        home = work / "library"
        script = Path(sys.executable).with_name("viewfinder")
        log("indexing data/ with the real CLI")
        subprocess.run([str(script), "index", str(ROOT / "data"), "--home", str(home), "--model", model, "--json"], check=True, capture_output=True)
        paths = sorted(str(p.resolve()) for p in (ROOT / "data").rglob("*") if p.suffix.lower() in (".png", ".jpg"))
        log("baseline: the same queries in this process")
        base = in_process(home, model, paths, seconds=max(3.0, args.seconds / 3))
        proc, url = start_server(home, work / "serve.log")
        try:
            log(f"1 client, then {args.clients} clients for {args.seconds:.0f}s on {url}")
            one = hammer(url, paths=paths, clients=1, seconds=max(3.0, args.seconds / 3))
            many = hammer(url, paths=paths, clients=args.clients, seconds=args.seconds)
        finally:
            proc.terminate()
            proc.wait(60)
        result = {
            "bench": "serve_load",
            "machine": machine(),
            "model": "tiny random CLIP" if args.model is None else args.model,
            "images": len(paths),
            "in_process": base,
            "server_1_client": one,
            f"server_{args.clients}_clients": many,
            "ratio_qps_server_n_vs_in_process": round(many["qps"] / base["qps"], 3) if base["qps"] else None,
            "ratio_p50_server_1_vs_in_process": round(one["p50_ms"] / base["p50_ms"], 3) if base["p50_ms"] else None,
            "clean_stop_exit_code": proc.returncode,
        }
        from common import emit  # type: ignore[import-not-found]

        emit(result, args.json)
        if many["errors"] or one["errors"]:
            raise SystemExit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
