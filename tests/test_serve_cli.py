"""``rlhf-organic serve`` as a user runs it: a real process listening on loopback, killed (SIGKILL, no
chance to flush anything) right after its last acknowledged event: every acknowledged event is on disk."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from click.testing import CliRunner

from rlhf_organic.cli import main

from serve_helpers import tiny_base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_keeps_every_acknowledged_event_when_killed(tmp_path):
    base, log, port = tiny_base(tmp_path / "base"), tmp_path / "log", _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_organic", "serve", str(base), "--log", str(log), "--port", str(port),
                             "--max-new-tokens", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=url) as client:
            assert "Your message" in client.get("/").text
            chat = client.post("/api/chat", json={}).json()["chat_id"]
            lines = client.post(f"/api/chat/{chat}/message", json={"text": "hello"}).text.splitlines()
            reply = next(e for e in map(json.loads, lines) if e["type"] == "reply")
            thumb = client.post(f"/api/chat/{chat}/feedback", json={"message_id": reply["message_id"], "thumbs": "up"})
            assert thumb.json() == {"ok": True}
            lines = client.post(f"/api/chat/{chat}/message", json={"text": "two please", "mode": "ab"}).text.splitlines()
            pair = next(e for e in map(json.loads, lines) if e["type"] == "ab")
            assert client.post(f"/api/chat/{chat}/choose", json={"ab_id": pair["ab_id"], "choice": "b"}).status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=30)[0]
    assert "logging to" in output and "127.0.0.1:" not in output.split("logging to")[1]  # no client address printed
    result = CliRunner().invoke(main, ["ingest", str(log / "data"), "--out", str(tmp_path / "ds"), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ds" / "summary.json").read_text())
    assert (summary["conversations"], summary["thumbs_up"], summary["preferences"], summary["rejected"]) == (1, 1, 1, 0)


def test_serve_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["serve", "unused-base", "--log", str(tmp_path / "mine")])
    assert result.exit_code == 2 and "did not write" in result.output
