"""``viewfinder serve``: the HTTP API (``ui.server``) on one library, with its model kept loaded.

While it runs, ``viewfinder search`` and ``similar`` on the same library ask it instead of loading the
library and the model themselves (``ui.client``; found through ``HOME/server.json``, ``ui.serverfile``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from search.errors import ViewfinderError
from ui import serverfile
from ui.clikit import BackendOpt, DeviceOpt, HomeOpt, ModelOpt, app, raise_usage, settings_for, user_errors

DEFAULT_PORT = 8765
TOKEN_ENV = serverfile.TOKEN_ENV


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), bound before anything slow so a taken port fails fast."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise ViewfinderError(f"Cannot listen on {host}:{port} ({err.strerror or err}): pick another --port (0 picks a free one).") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def live_server(home: Path) -> serverfile.ServerInfo | None:
    """The server named by ``HOME/server.json`` if it is still up and serving this library, else None
    (no file, or a stale one: its process is gone or its port does not answer as this library)."""
    from ui.client import Remote, ServerGone

    info = serverfile.read(home)
    if info is None or not serverfile.pid_alive(info.pid):
        return None
    try:
        Remote(info.url, None, serverfile.library_id(home)).request("GET", "/health")
    except ServerGone:
        return None
    except ViewfinderError:  # 401: it is up and wants a token
        return info
    return info


class _Stop(Exception):
    """SIGTERM or Ctrl-C, after uvicorn has shut down gracefully."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stop


@app.command()
def serve(
    home: HomeOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    backend: BackendOpt = None,
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to bind: loopback only unless a --token is set.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port; 0 picks a free one.")] = DEFAULT_PORT,
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", envvar=TOKEN_ENV, show_envvar=False,
                     help=f"Require 'Authorization: Bearer TOKEN' on every request (default: ${TOKEN_ENV}). Needed to bind beyond loopback."),
    ] = None,  # fmt: skip
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request on stderr.")] = True,
) -> None:
    """Serve a library over HTTP (JSON; API docs at /docs) with its model loaded once; `search` and
    `similar` on the same library then answer through it in milliseconds."""
    settings = settings_for(home, model, device, backend)
    token = token or None
    if not is_loopback(host) and not token:
        raise_usage(f"Binding to {host} opens the library to the network: set --token (or ${TOKEN_ENV}) so requests must carry it, or use --host 127.0.0.1.")
    with user_errors():
        running = live_server(settings.home)
        if running is not None:
            raise ViewfinderError(f"{running.url} (pid {running.pid}) already serves {settings.home}; stop it first, or use it.")
        sock = bind(host, port)
        try:
            app_, state, stopped = _build(settings, sock, host, token)
        except BaseException:
            sock.close()
            raise
    _run(app_, sock, access_log, stopped)
    state.close()


def _build(settings: Any, sock: socket.socket, host: str, token: str | None) -> tuple[Any, Any, Any]:
    from ui.server import create_app
    from ui.serverstate import open_state

    typer.echo(f"Viewfinder: loading {settings.home}…", err=True)
    state = open_state(settings.home, settings.model, settings.device, backend=settings.backend)
    bound_port = sock.getsockname()[1]
    info = serverfile.ServerInfo(
        host=host, port=bound_port, pid=os.getpid(), home=serverfile.library_id(settings.home),
        token_required=token is not None, started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )  # fmt: skip

    def ready() -> None:
        serverfile.write(state.home, info)
        typer.echo(f"Viewfinder: serving {info.home} on {info.url} (API docs at {info.url}/docs; Ctrl-C stops it)", err=True)

    def stopped() -> None:
        serverfile.remove(state.home, info.pid)

    return create_app(state, token=token, on_ready=ready, on_stop=stopped), state, stopped


def _run(app_: Any, sock: socket.socket, access_log: bool, stopped: Any) -> None:
    import uvicorn

    config = uvicorn.Config(app_, log_level="info", access_log=access_log, lifespan="on", server_header=False, log_config=None)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start/stop chatter: ours says it
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal: these handlers turn that
    # into a clean exit 0 (the lifespan has already removed the discovery file).
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    except _Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stopped()
        sock.close()
    typer.echo("Viewfinder: stopped.", err=True)
