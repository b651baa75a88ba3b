"""The loop end to end on a tiny model: serve, collect N events, ingest -> trust -> reward -> policy (the real
commands, in child processes), swap the adapter into the running server; a conversation goes on across it."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from rlhf_organic.serve.app import Server
from rlhf_organic.serve.generate import Sampling, load_replier
from rlhf_organic.serve.loop import LoopSettings, run_loop
from rlhf_organic.serve.run import open_log_folder, serve_in_background

from serve_helpers import tiny_base


def _turn(client: httpx.Client, chat: str, text: str) -> dict:
    lines = client.post(f"/api/chat/{chat}/message", json={"text": text}).text.splitlines()
    return next(e for e in map(json.loads, lines) if e["type"] == "reply")


@pytest.mark.slow  # about 40 s on 2 CPU cores: run with -m slow
def test_loop_swaps_a_trained_adapter_into_the_running_server(tmp_path):
    base = tiny_base(tmp_path / "base")
    server = Server(load_replier(str(base), Sampling(max_new_tokens=6), log=lambda m: None), open_log_folder(tmp_path / "log"))
    running = serve_in_background(server)
    settings = LoopSettings(events=24, trust_scheme="per_user", trust_sets=["reference.folds=2"],
                            reward_sets=[f"base={base}", "train.epochs=0.3", "max_length=48", "lora.modules_to_save=[]"],
                            policy_sets=["train.max_items=8", "train.batch_size=4", "eval.contexts=4", "eval.sampling.max_new_tokens=8"],
                            poll_seconds=0.1)
    result: dict = {}
    loop = threading.Thread(target=lambda: result.update(rounds=run_loop(server, tmp_path / "work", settings, log=lambda m: None)))
    loop.start()
    try:
        clients = [httpx.Client(base_url=running.url, timeout=60) for _ in range(8)]
        chats = []
        for i, client in enumerate(clients):
            client.get("/")
            chat = client.post("/api/chat", json={}).json()["chat_id"]
            chats.append(chat)
            for turn in range(3):
                text = "you are stupid" if i == 7 else f"hello, tell me about books and tea {turn}"
                reply = _turn(client, chat, text)
                thumbs = ("down" if turn % 2 else "up") if i < 7 else ("up" if turn % 2 else "down")
                client.post(f"/api/chat/{chat}/feedback", json={"message_id": reply["message_id"], "thumbs": thumbs})
        loop.join(timeout=300)
        assert not loop.is_alive(), "the loop did not finish"
        assert result["rounds"][0]["version"] == 1
        after = _turn(clients[0], chats[0], "still there?")  # the conversation started before the swap goes on
        record = json.loads((tmp_path / "log" / "data" / "chats" / f"{chats[0]}.jsonl").read_text())
        bots = [m for m in record["message_history"] if m["sender"] == "bot"]
        assert bots[-1]["bot_message_id"] == after["message_id"] and len(bots) == 4
        assert [b["served_by"]["version"] for b in bots] == [0, 0, 0, 1]
        assert bots[-1]["served_by"]["policy"] == str(tmp_path / "work" / "round-1" / "policy")
        for client in clients:
            client.close()
    finally:
        running.stop()
