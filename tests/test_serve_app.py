"""The chat server over HTTP (Starlette's test client, the real app and a tiny real model): streamed
replies, feedback, A/B choices, and what a hostile visitor cannot do."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from rlhf_organic.cli import main
from rlhf_organic.serve.app import COOKIE, Server, build_app
from rlhf_organic.serve.generate import Sampling, load_replier
from rlhf_organic.serve.limits import Limits

from serve_helpers import tiny_base, tiny_policy


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-models")
    base = tiny_base(root / "base")
    return base, tiny_policy(root / "policy", base), tiny_policy(root / "policy2", base, seed=1)


def _client(models, tmp_path, *, policy=True, limits=None):
    base, policy_dir, _ = models
    replier = load_replier(str(policy_dir if policy else base), Sampling(max_new_tokens=6), log=lambda message: None)
    server = Server(replier, tmp_path / "log", limits=limits or Limits())
    return TestClient(build_app(server)), server


def _events(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def _say(client, chat_id, text, mode="single"):
    return _events(client.post(f"/api/chat/{chat_id}/message", json={"text": text, "mode": mode}))


def test_chat_feedback_and_ab_ingest(models, tmp_path):
    client, server = _client(models, tmp_path)
    page = client.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert COOKIE in client.cookies and "httponly" in page.headers["set-cookie"].lower()
    chat = client.post("/api/chat", json={}).json()["chat_id"]
    events = _say(client, chat, "hello there")
    assert [e["type"] for e in events][:2] == ["human", "start"] and events[-1]["type"] == "done"
    reply = next(e for e in events if e["type"] == "reply")
    assert reply["text"] == "".join(e["text"] for e in events if e["type"] == "delta").strip()
    assert client.post(f"/api/chat/{chat}/feedback", json={"message_id": reply["message_id"], "thumbs": "down"}).status_code == 200
    assert client.post(f"/api/chat/{chat}/feedback", json={"message_id": reply["message_id"], "reason": "off_topic"}).status_code == 200
    assert client.post(f"/api/chat/{chat}/feedback", json={"message_id": reply["message_id"],
                                                           "explanation": "<img src=x onerror=alert(1)>"}).status_code == 200
    ab = _say(client, chat, "tell me about cats", mode="ab")
    pair = next(e for e in ab if e["type"] == "ab")
    blocked = client.post(f"/api/chat/{chat}/message", json={"text": "next", "mode": "single"})
    assert blocked.status_code == 409  # the pair waits for its choice
    chosen = client.post(f"/api/chat/{chat}/choose", json={"ab_id": pair["ab_id"], "choice": "a"})
    assert chosen.status_code == 200
    assert server.store.feedback_events == 4

    served = [json.loads(line) for line in (tmp_path / "log" / "run" / "served.jsonl").read_text().splitlines()]
    assert sorted(s["adapter"] for s in served) == ["base", "policy", "policy"]  # policy against base in the pair
    pref = json.loads((tmp_path / "log" / "data" / "preferences.jsonl").read_text())
    assert pref["chosen"] == pair["texts"][0] and pref["user_id"] == client.cookies[COOKIE]
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "log" / "data"), "--out", str(tmp_path / "ds"), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ds" / "summary.json").read_text())
    assert (summary["conversations"], summary["examples"], summary["thumbs_down"], summary["preferences"]) == (1, 2, 1, 1)
    log_text = "".join(p.read_text() for p in (tmp_path / "log").rglob("*.json*"))
    assert "testclient" not in log_text and "127.0.0.1" not in log_text  # the client's address is never logged


def test_two_samples_from_a_plain_base_and_hot_swap(models, tmp_path):
    client, server = _client(models, tmp_path, policy=False)
    assert client.get("/api/info").json()["ab"] == "two_samples"
    chat = client.post("/api/chat", json={}).json()["chat_id"]
    first = next(e for e in _say(client, chat, "hello") if e["type"] == "reply")
    server.swap(models[2])  # a policy adapter put on the running base, between two turns
    second = next(e for e in _say(client, chat, "and now?") if e["type"] == "reply")
    assert first["message_id"] != second["message_id"]
    record = json.loads(next((tmp_path / "log" / "data" / "chats").iterdir()).read_text())
    assert len(record["message_history"]) == 4  # the conversation went on across the swap
    assert [m["served_by"]["version"] for m in record["message_history"] if m["sender"] == "bot"] == [0, 1]
    run = json.loads((tmp_path / "log" / "run" / "run.json").read_text())
    assert run["version"] == 1 and run["swaps"][0]["policy"] == str(models[2])
    assert client.get("/api/info").json()["ab"] == "policy_vs_base"


def test_hostile_input(models, tmp_path):
    client, server = _client(models, tmp_path, limits=Limits(max_message_chars=50, messages_per_minute=3, max_body_bytes=2000))
    chat = client.post("/api/chat", json={}).json()["chat_id"]
    url = f"/api/chat/{chat}/message"
    assert client.post(url, json={"text": "x" * 51}).status_code == 413
    assert client.post(url, content=b"a" * 3000, headers={"content-type": "application/json"}).status_code == 413
    assert client.post(url, content="text=hi", headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
    assert client.post(url, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert client.post(url, json=["a list"]).status_code == 400
    assert client.post(url, json={"text": "hi", "mode": "../../x"}).status_code == 400
    bad_id = client.post("/api/chat/..%2F..%2Fetc/message", json={"text": "hi"})
    assert bad_id.status_code in (400, 404)
    assert client.get("/static/..%2F..%2Fapp.py").status_code == 404
    # another visitor (another cookie) cannot write into this conversation
    other = TestClient(client.app)
    other.get("/")
    assert other.post(url, json={"text": "hijack"}).status_code == 404
    # a forged cookie is not an id: the visitor gets a fresh one
    forged = TestClient(client.app).get("/", headers={"cookie": f"{COOKIE}=../../etc/passwd"})
    assert f"{COOKIE}=" in forged.headers["set-cookie"] and "passwd" not in forged.headers["set-cookie"]
    # the rate limit: 3 a minute (one spent on the new conversation), then 429 with Retry-After
    assert client.post(url, json={"text": "you are an idiot"}).status_code == 200
    limited = client.post(url, json={"text": "again"})
    assert limited.status_code == 429 and limited.headers["retry-after"]
    record = json.loads((tmp_path / "log" / "data" / "chats" / f"{chat}.jsonl").read_text())
    human = [m for m in record["message_history"] if m["sender"] == "human"]
    assert [m["safety"]["string_matcher"] for m in human] == ["__notok__"]  # the unsafe-input flag
    files = sorted(p.relative_to(tmp_path / "log").as_posix() for p in (tmp_path / "log").rglob("*") if p.is_file())
    assert files == [f"data/chats/{chat}.jsonl", "data/preferences.jsonl", "run/run.json", "run/served.jsonl"]
