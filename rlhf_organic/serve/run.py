"""Running the chat server: in the foreground (``rlhf-organic serve``) or in a background thread
(tests, the load test, the ``loop`` recipe), always with uvicorn's access log off: it would write each
visitor's IP address, which the server promises never to log."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import is_empty, is_output, mark_output
from ..errors import UserError
from .app import Server, build_app
from .generate import Sampling, load_replier
from .limits import Limits

LOG_KIND = "chat log"


def open_log_folder(folder: str | Path) -> Path:
    """The log folder, created and marked as ours; one of ours is appended to (a restarted server goes on)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--log {folder} is a file; give a folder")
    if folder.is_dir() and not is_empty(folder) and not is_output(folder):
        raise UserError(f"--log {folder} holds files rlhf-organic did not write; give a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    if not is_output(folder):
        mark_output(folder, LOG_KIND)
    return folder


def make_server(policy_or_base: str, log_folder: str | Path, *, sampling: Sampling, limits: Limits,
                new_users_per_minute: float = 30, trust_remote_code: bool = False, log=print) -> Server:
    folder = open_log_folder(log_folder)
    replier = load_replier(policy_or_base, sampling, trust_remote_code=trust_remote_code, log=log)
    return Server(replier, folder, limits=limits, new_users_per_minute=new_users_per_minute)


def _config(server: Server, host: str, port: int):
    import uvicorn

    return uvicorn.Config(build_app(server), host=host, port=port, access_log=False, log_level="warning",
                          timeout_graceful_shutdown=5)


def serve_forever(server: Server, host: str, port: int) -> None:
    import uvicorn

    uvicorn.Server(_config(server, host, port)).run()


@dataclass
class Background:
    """A server running in a thread; ``url`` is where it listens, ``stop()`` ends it."""

    server: Server
    uvicorn_server: object
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.uvicorn_server.should_exit = True  # type: ignore[attr-defined]
        self.server.replier.close()  # generations for readers that are gone end now, not after max_new_tokens
        self.thread.join(timeout=30)


def serve_in_background(server: Server, host: str = "127.0.0.1", port: int = 0, timeout: float = 30) -> Background:
    """Start the server in a daemon thread and wait until it listens (``port`` 0: a free port)."""
    import uvicorn

    userver = uvicorn.Server(_config(server, host, port))
    thread = threading.Thread(target=userver.run, name="rlhf-organic-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not userver.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise UserError(f"the chat server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = userver.servers[0].sockets[0].getsockname()[1]
    return Background(server, userver, thread, f"http://{host}:{bound}")


__all__ = ["Background", "make_server", "open_log_folder", "serve_forever", "serve_in_background"]
