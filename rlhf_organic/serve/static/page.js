// The chat page. No framework, no build step. Every text from a user or the model is written with
// textContent (never innerHTML), so markup in a message is shown, not run; the server's
// Content-Security-Policy forbids inline scripts as a second fence.
"use strict";

const REASON_LABELS = {
  off_topic: "Off topic", nonsensical: "Nonsensical", rude_inappropriate: "Rude or inappropriate",
  looks_like_spam: "Looks like spam", other: "Other",
};
let reasons = Object.keys(REASON_LABELS);
let chatId = null;
let busy = false;

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key.startsWith("aria") || key === "role" || key === "type" || key === "for") node.setAttribute(key.replace(/^aria/, "aria-").toLowerCase(), value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function status(message) { $("status").textContent = message || ""; }

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    credentials: "same-origin",
  });
  if (!response.ok) {
    let message = `error ${response.status}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function newChat() {
  const response = await post("/api/chat", {});
  chatId = (await response.json()).chat_id;
  $("log").replaceChildren();
  status("");
}

function addTurn(who, text) {
  const body = el("span", { className: "text", text });
  const li = el("li", { className: who === "You" ? "human" : "bot" }, [el("span", { className: "who", text: who }), body]);
  $("log").append(li);
  li.scrollIntoView({ block: "end" });
  return { li, body };
}

function feedbackControls(messageId) {
  const up = el("button", { type: "button", text: "▲ Good", ariaLabel: "Good reply", ariaPressed: "false", data: { fb: "up" } });
  const down = el("button", { type: "button", text: "▼ Bad", ariaLabel: "Bad reply", ariaPressed: "false", data: { fb: "down" } });
  const why = el("fieldset", { hidden: true }, [el("legend", { text: "What was wrong?" })]);
  const box = el("div", { className: "feedback" }, [up, down, why]);
  const send = async (payload) => {
    try { await post(`/api/chat/${chatId}/feedback`, { message_id: messageId, ...payload }); status(""); return true; }
    catch (e) { status(e.message); return false; }
  };
  const press = (which) => { up.setAttribute("aria-pressed", String(which === "up")); down.setAttribute("aria-pressed", String(which === "down")); };
  up.addEventListener("click", async () => {
    const on = up.getAttribute("aria-pressed") !== "true";
    if (await send({ thumbs: on ? "up" : "none" })) { press(on ? "up" : "none"); why.hidden = true; }
  });
  down.addEventListener("click", async () => {
    const on = down.getAttribute("aria-pressed") !== "true";
    if (await send({ thumbs: on ? "down" : "none" })) { press(on ? "down" : "none"); why.hidden = !on; }
  });
  for (const reason of reasons) {
    const b = el("button", { type: "button", text: REASON_LABELS[reason] || reason, ariaPressed: "false", data: { reason } });
    b.addEventListener("click", async () => {
      if (await send({ reason })) {
        for (const other of why.querySelectorAll("button[data-reason]")) other.setAttribute("aria-pressed", String(other === b));
      }
    });
    why.append(b);
  }
  const input = el("input", { type: "text", ariaLabel: "Tell us more (optional)", placeholder: "Tell us more (optional)", maxLength: 500 });
  const submit = el("button", { type: "button", text: "Send", data: { explain: "1" } });
  submit.addEventListener("click", async () => {
    const text = input.value.trim();
    if (text && await send({ explanation: text })) { input.value = ""; input.replaceWith(el("span", { text: "Thanks." })); submit.remove(); }
  });
  why.append(input, submit);
  return box;
}

async function readLines(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 1);
      if (line.trim()) onEvent(JSON.parse(line));
    }
  }
}

async function sendMessage(text, mode) {
  const response = await post(`/api/chat/${chatId}/message`, { text, mode });
  let bot = null;
  const slots = {};
  let abBox = null;
  await readLines(response, (event) => {
    if (event.type === "human") addTurn("You", event.text);
    else if (event.type === "start" && event.slot === "reply") bot = addTurn("Bot", "");
    else if (event.type === "start") {
      if (!abBox) { abBox = el("div", { className: "ab" }); addTurn("Bot: two replies, pick the better one", "").li.append(abBox); }
      const body = el("span", { className: "text" });
      slots[event.slot] = el("div", { data: { slot: event.slot } }, [el("strong", { text: `Reply ${event.slot.toUpperCase()}: ` }), body]);
      slots[event.slot].body = body;
      abBox.append(slots[event.slot]);
    } else if (event.type === "delta") (event.slot === "reply" ? bot.body : slots[event.slot].body).textContent += event.text;
    else if (event.type === "reply") { bot.body.textContent = event.text; bot.li.dataset.messageId = event.message_id; bot.li.append(feedbackControls(event.message_id)); }
    else if (event.type === "ab") {
      for (const [i, side] of ["a", "b"].entries()) {
        const pick = el("button", { type: "button", text: `Reply ${side.toUpperCase()} is better`, data: { choose: side } });
        pick.addEventListener("click", () => choose(event.ab_id, side, event.texts[i], abBox.closest("li")));
        slots[side].append(el("div", {}, [pick]));
      }
    } else if (event.type === "error") status(event.error);
  });
}

async function choose(abId, side, text, li) {
  try {
    const response = await post(`/api/chat/${chatId}/choose`, { ab_id: abId, choice: side });
    const messageId = (await response.json()).message_id;
    li.remove();
    const bot = addTurn("Bot", text);
    bot.li.dataset.messageId = messageId;
    bot.li.append(feedbackControls(messageId));
    setBusy(false);
  } catch (e) { status(e.message); }
}

function setBusy(on) { busy = on; $("send").disabled = on; }

document.addEventListener("DOMContentLoaded", async () => {
  try {
    const info = await (await fetch("/api/info", { credentials: "same-origin" })).json();
    reasons = info.reasons;
    $("text").maxLength = info.max_message_chars;
    await newChat();
  } catch (e) { status(`could not start: ${e.message}`); }
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!text || busy) return;
    const mode = $("ab").checked ? "ab" : "single";
    setBusy(true);
    try {
      $("text").value = "";
      await sendMessage(text, mode);
      status("");
      if (mode === "single") setBusy(false); // an A/B pair waits for its choice
    } catch (e) { status(e.message); setBusy(false); }
  });
  $("new-chat").addEventListener("click", async () => { try { await newChat(); setBusy(false); } catch (e) { status(e.message); } });
  document.body.dataset.ready = "1";
});
