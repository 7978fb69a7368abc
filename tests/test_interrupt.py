"""Ctrl-C while the model loads is answered at once. The load (imports and weights: seconds, minutes for a
first download) runs while the decoder threads wait for the model; the run used to wait for the load to
finish before it could stop. A real index run in a subprocess, with a model factory that takes a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import write_image

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from pathlib import Path
    from indexer.run import index_paths
    from indexer.writer import LibraryWriter

    # Ctrl-C as in a terminal, even when this runs under a shell that started it with SIGINT ignored (a
    # background job: Python then installs no KeyboardInterrupt handler at all).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def slow_model():
        print("loading", flush=True)
        if os.environ.get("SIGINT_TO_LOADER"):  # as Linux may do: the process's SIGINT lands on another thread
            time.sleep(0.5)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        time.sleep(60)  # as long as a slow import, a big checkpoint or a hub that does not answer
        raise AssertionError("not reached")

    with LibraryWriter.open(Path(sys.argv[1])) as writer:
        try:
            index_paths([Path(sys.argv[2])], writer, slow_model, model_id="slow", batch_size=4, workers=2)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """
)


def test_ctrl_c_while_the_model_loads_exits_at_once(tmp_path: Path) -> None:
    for i in range(6):
        write_image(tmp_path / "photos" / f"{i}.png", seed=i)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "library"), str(tmp_path / "photos")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items() if k != "SIGINT_TO_LOADER"},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "loading"
        time.sleep(0.5)  # the decoder threads are waiting for the model now
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=50)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in out
    assert took < 20, f"Ctrl-C took {took:.1f}s: the run waited for the model load"  # it used to wait the full 60 s


def test_ctrl_c_that_another_thread_receives_is_answered_at_once(tmp_path: Path) -> None:
    """The kernel hands a process's SIGINT to any thread that does not block it; the main thread, blocked
    waiting for the decoders, must still run the handler soon (it used to wait out the whole load)."""
    for i in range(6):
        write_image(tmp_path / "photos" / f"{i}.png", seed=i)
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "library"), str(tmp_path / "photos")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "SIGINT_TO_LOADER": "1"},
    )  # fmt: skip
    took = time.monotonic() - started
    assert out.returncode == 130 and "interrupted" in out.stdout, out.stderr
    assert took < 45, f"the run took {took:.1f}s: the SIGINT waited for the 60 s model load"
