"""The chat server's routes (Starlette): the page, a streamed reply, thumbs / reasons / explanations, A/B.

Requests and what they may do:

- ``GET /`` and ``/static/*``: the page (HTML, one script, one style sheet; no build step). A strict
  Content-Security-Policy allows scripts from this origin only, so even text that slipped into the
  page as markup could not run; the page itself only ever writes user and bot text as ``textContent``.
- ``POST /api/chat``: a new conversation. ``POST /api/chat/{id}/message``: a human turn; the answer is
  a stream of JSON lines (the human message, reply pieces, the finished reply or A/B pair).
  ``POST /api/chat/{id}/feedback`` and ``/choose``: thumbs, reason, explanation, A/B choice.

Who is who: a random pseudonymous id in an HttpOnly, SameSite=Strict cookie (``rlhf_uid``), made on
the first visit. The client's address is used in memory only (a cap on new ids per address, so that
clearing cookies does not reset the rate limits at will), never written: uvicorn's access log is off
(``cli.serve``). POST bodies must be JSON (``Content-Type: application/json``), which, with the
SameSite cookie, keeps other sites from posting on a visitor's behalf.
"""

from __future__ import annotations

import random
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .chat import UI_REASONS, Candidate, ChatStore, new_id
from .generate import Replier
from .limits import InputRejected, Limits, RateLimiter, clean_text
from .log import ID_PATTERN, ChatLog

COOKIE = "rlhf_uid"
_STATIC = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Server:
    """What the routes share: the replier, the conversations and the limits."""

    def __init__(self, replier: Replier, log_folder: str | Path, *, limits: Limits | None = None,
                 new_users_per_minute: float = 30):
        self.replier, self.limits = replier, limits or Limits()
        self.log = ChatLog(log_folder)
        self.store = ChatStore(self.log, self.limits)
        self.message_limit = RateLimiter(self.limits.messages_per_minute)
        self.feedback_limit = RateLimiter(self.limits.feedback_per_minute)
        self.new_user_limit = RateLimiter(new_users_per_minute, burst=new_users_per_minute)  # a minute's worth at once
        self.started = time.time()
        self.swaps: list[dict] = []
        self.write_run()

    def write_run(self) -> None:
        r = self.replier
        self.log.write_run({"started": self.started, "base": r.base, "policy": r.policy, "version": r.version,
                            "sampling": r.sampling.__dict__, "limits": self.limits.__dict__, "swaps": self.swaps})

    def swap(self, policy_folder: str | Path) -> int:
        """Serve the adapter of ``policy_folder`` from the next reply on (conversations go on)."""
        version = self.replier.swap(policy_folder)
        self.swaps.append({"time": time.time(), "policy": str(policy_folder), "version": version})
        self.write_run()
        return version


def _page_file(name: str) -> bytes:
    return resources.files("rlhf_organic.serve").joinpath("static").joinpath(name).read_bytes()


def _json_error(message: str, status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


async def _body(request: Request, limits: Limits) -> dict:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InputRejected("send JSON (Content-Type: application/json)", status=415)
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
        raise InputRejected(f"request body over {limits.max_body_bytes} bytes", status=413)
    data = b""
    async for chunk in request.stream():  # counted as it arrives: a missing length header is no way around it
        data += chunk
        if len(data) > limits.max_body_bytes:
            raise InputRejected(f"request body over {limits.max_body_bytes} bytes", status=413)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InputRejected("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InputRejected("the request body must be a JSON object")
    return body


def _user(request: Request, server: Server) -> tuple[str, bool]:
    """The visitor's pseudonymous id and whether it is new (to be set as a cookie)."""
    uid = request.cookies.get(COOKIE, "")
    if ID_PATTERN.fullmatch(uid):
        return uid, False
    address = request.client.host if request.client else "unknown"  # in memory only, never logged
    wait = server.new_user_limit.take(address)
    if wait:
        raise InputRejected("too many new visitors from this address; try again later", status=429)
    return new_id(), True


def _with_cookie(response: Response, uid: str, new: bool) -> Response:
    if new:
        response.set_cookie(COOKIE, uid, max_age=365 * 24 * 3600, httponly=True, samesite="strict", path="/")
    response.headers.update(_SECURITY_HEADERS)
    return response


def _rate(limiter: RateLimiter, uid: str) -> None:
    wait = limiter.take(uid)
    if wait:
        raise InputRejected(f"slow down: try again in {wait:.0f} s", status=429)


def build_app(server: Server) -> Starlette:
    limits = server.limits

    def handler(fn):
        """Run a route with the visitor's id; a refused input becomes a JSON error with its status."""

        async def route(request: Request) -> Response:
            uid, new = "", False
            try:
                uid, new = _user(request, server)
                response = await fn(request, uid)
            except InputRejected as exc:
                headers = {"Retry-After": "60"} if exc.status == 429 else {}
                response = _json_error(str(exc), exc.status, **headers)
            return _with_cookie(response, uid, new)

        return route

    async def page(request: Request, uid: str) -> Response:
        return Response(_page_file("index.html"), media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:  # a fixed list: no path from the request reaches the file system
            return _json_error("not found", 404)
        response = Response(_page_file(name), media_type=_STATIC[name])
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def info(request: Request, uid: str) -> Response:
        return JSONResponse({"reasons": list(UI_REASONS), "ab": "policy_vs_base" if server.replier.has_policy else "two_samples",
                             "max_message_chars": limits.max_message_chars, "max_reason_chars": limits.max_reason_chars})

    async def new_chat(request: Request, uid: str) -> Response:
        await _body(request, limits)
        _rate(server.feedback_limit, uid)  # cheap: no generation
        chat = server.store.new_chat(uid)
        return JSONResponse({"chat_id": chat.chat_id})

    async def message(request: Request, uid: str) -> Response:
        body = await _body(request, limits)
        chat = server.store.get(request.path_params["chat_id"], uid)
        mode = body.get("mode", "single")
        if mode not in ("single", "ab"):
            raise InputRejected('mode must be "single" or "ab"')
        clean_text(body.get("text"), limit=limits.max_message_chars, what="message")  # refused before it costs a token
        _rate(server.message_limit, uid)
        human = await run_in_threadpool(server.store.add_human, chat, body.get("text"))
        return StreamingResponse(_reply_stream(server, chat, human, mode), media_type="application/x-ndjson")

    async def feedback(request: Request, uid: str) -> Response:
        body = await _body(request, limits)
        chat = server.store.get(request.path_params["chat_id"], uid)
        _rate(server.feedback_limit, uid)
        store, message_id = server.store, body.get("message_id")
        kinds = [k for k in ("thumbs", "reason", "explanation") if k in body]
        if len(kinds) != 1:
            raise InputRejected("send one of thumbs, reason or explanation")
        if kinds[0] == "thumbs":
            await run_in_threadpool(store.thumbs, chat, message_id, body["thumbs"])
        elif kinds[0] == "reason":
            await run_in_threadpool(store.reason, chat, message_id, body["reason"])
        else:
            await run_in_threadpool(store.explain, chat, message_id, body["explanation"])
        return JSONResponse({"ok": True})

    async def choose(request: Request, uid: str) -> Response:
        body = await _body(request, limits)
        chat = server.store.get(request.path_params["chat_id"], uid)
        _rate(server.feedback_limit, uid)
        message = await run_in_threadpool(server.store.choose, chat, body.get("ab_id"), body.get("choice"))
        return JSONResponse({"ok": True, "message_id": message["bot_message_id"]})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "version": server.replier.version, "feedback_events": server.store.feedback_events})

    routes = [
        Route("/", handler(page)),
        Route("/static/{name}", static),
        Route("/healthz", health),
        Route("/api/info", handler(info)),
        Route("/api/chat", handler(new_chat), methods=["POST"]),
        Route("/api/chat/{chat_id}/message", handler(message), methods=["POST"]),
        Route("/api/chat/{chat_id}/feedback", handler(feedback), methods=["POST"]),
        Route("/api/chat/{chat_id}/choose", handler(choose), methods=["POST"]),
    ]
    @asynccontextmanager
    async def lifespan(app):
        yield
        server.log.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.server = server
    return app


def _line(obj: dict) -> bytes:
    return orjson.dumps(obj) + b"\n"


async def _reply_stream(server: Server, chat, human: dict, mode: str):
    """The streamed answer to one human turn: JSON lines, each a complete event the page can act on."""
    yield _line({"type": "human", "message_id": human["human_message_id"], "text": human["text"]})
    replier, context = server.replier, await run_in_threadpool(server.store.context, chat)
    if mode == "single":
        sides = [("reply", "policy")]
    elif replier.has_policy:  # policy against base, in random order so that position says nothing
        sides = list(zip(("a", "b"), random.sample(["policy", "base"], 2)))
    else:
        sides = [("a", "policy"), ("b", "policy")]  # two samples of the one model
    candidates = []
    try:
        for slot, adapter in sides:
            yield _line({"type": "start", "slot": slot})
            pieces = []
            async for piece in replier.stream(context, adapter=adapter):
                pieces.append(piece)
                yield _line({"type": "delta", "slot": slot, "text": piece})
            candidates.append(Candidate(new_id(), "".join(pieces).strip(), replier.served_by(adapter)))
    except Exception as exc:  # the model failed: say so on the stream (the status line is long gone)
        yield _line({"type": "error", "error": f"the reply could not be generated ({type(exc).__name__})"})
        return
    if mode == "single":
        message = await run_in_threadpool(server.store.add_bot, chat, candidates[0])
        yield _line({"type": "reply", "slot": "reply", "message_id": message["bot_message_id"], "text": message["text"]})
    else:
        ab_id = await run_in_threadpool(server.store.add_ab, chat, candidates)
        yield _line({"type": "ab", "ab_id": ab_id, "texts": [c.text for c in candidates]})
    yield _line({"type": "done"})


__all__ = ["COOKIE", "Server", "build_app"]
