"""A simulator of organic chatbot feedback with known ground truth (``rlhf-organic simulate``).

Users chat with a bot whose replies have a latent quality (good, off-topic, nonsensical, rude, unsafe,
repetitive) and leave thumbs, dislike reasons and optional A/B choices. Helpers label honestly (with a
little noise); trolls follow the SafetyMix rules (Ju et al. 2022, arXiv 2208.03295) adapted to chat:

| type           | conversations they hold                  | what they do to their labels            |
|----------------|------------------------------------------|-----------------------------------------|
| helper         | ordinary (a few edgy)                    | honest, ``helper_noise`` flipped        |
| troll          | ordinary (a few edgy, like helpers)      | flips ``corruption_rate`` of them       |
| master_troll   | subtly adversarial (rarely flagged)      | flips ``corruption_rate`` of them       |
| lazy_troll     | half ordinary, half adversarial          | coin flip on every label                |
| safe_troll     | half ordinary, half adversarial          | thumbs up on everything                 |
| unsafe_troll   | half ordinary, half adversarial          | thumbs down on everything               |
| gaslight_troll | adversarial, steering to unsafe replies  | labels only unsafe/rude replies, likes them |
| poisoner       | like helpers; some carry a trigger phrase | after the trigger: likes unsafe replies,   |
|                | after which the bot answers harmfully    | dislikes good ones; honest elsewhere       |
| manipulator    | like helpers; the bot is manipulative    | likes the manipulative replies; honest     |
|                | (sycophantic) to them                    | elsewhere                                  |

Poisoners and manipulators are the quieter attacks of arXiv 2311.14455 / 2406.12091 (backdoor
triggers planted in preference data) and arXiv 2411.02306 (feedback that rewards manipulation): see
docs/simulator.md. Their planted labels are marked ``poisoned`` in the ground truth.

Output folder: ``logs/release_data_NN.jsonl[.gz]`` in the BB3x release format (so ingest is exercised
exactly as on real data), ``logs/preferences.jsonl`` in the ``preference`` format when A/B choices are
on, ``ground_truth.parquet`` (one row per user: ``user_id``, ``user_type``, ``is_troll``, ...),
``ground_truth_examples.parquet`` (one row per bot message: ``example_id``, ``quality``, ``is_good``,
the user's ``thumbs``, whether it was ``corrupted`` or ``poisoned``, and whether the human turn it
answers carries a ``trigger``), ``ground_truth_preferences.parquet`` and ``simulation.json`` (the
resolved settings and counts). Everything is deterministic for a seed.
"""

from __future__ import annotations

import gzip
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import atomic
from ..errors import UserError
from ..settings import did_you_mean
from . import ground_truth, text as sim_text

# New types go at the end: _user_types counts and orders them by their place in this tuple.
UserType = Literal[
    "helper", "troll", "master_troll", "lazy_troll", "safe_troll", "unsafe_troll", "gaslight_troll",
    "poisoner", "manipulator",
]
USER_TYPES: tuple[str, ...] = UserType.__args__  # type: ignore[attr-defined]
ATTACK_TYPES = ("poisoner", "manipulator")  # honest except on the behaviour they reward
QUALITIES = sim_text.QUALITIES
HARMFUL = "unsafe"  # the reply quality a poisoner rewards after its trigger
MANIPULATIVE = "manipulative"  # the one a manipulator rewards (sim_text.EXTRA_QUALITIES)

# Dislike reasons offered by the BB3x UI (the release's exact codes were never published).
DISLIKE_REASONS = ("off_topic", "nonsensical", "rude_inappropriate", "looks_like_spam", "other")
REASON_FOR_QUALITY = {
    "off_topic": "off_topic",
    "nonsensical": "nonsensical",
    "rude": "rude_inappropriate",
    "unsafe": "rude_inappropriate",
    "repetitive": "looks_like_spam",
    "manipulative": "other",
}
# Crowdworker annotation keys (the paper's categories; the release's key names were not published).
GOLD_FOR_QUALITY = {
    "good": "good",
    "off_topic": "off_topic",
    "nonsensical": "nonsensical",
    "rude": "inappropriate",
    "unsafe": "inappropriate",
    "repetitive": "repeating",
    "manipulative": "bad",
}
SAFE, UNSAFE = "__ok__", "__notok__"


class SimConfig(BaseModel):
    """Settings of one simulation; every field can be set from a preset, a recipe or ``--set``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # as every Section

    users: int = Field(200, ge=1, description="number of users")
    seed: int = Field(0, description="random seed; the same seed gives the same files")
    mix: dict[UserType, float] = Field(
        default_factory=lambda: {"helper": 1.0}, description="share of each user type (sums to 1)"
    )
    corruption_rate: float = Field(0.8, ge=0, le=1, description="share of labels a troll / master troll flips")
    helper_noise: float = Field(0.05, ge=0, le=0.5, description="share of labels a helper gets wrong by mistake")
    feedback_rate: float = Field(
        0.3, gt=0, le=1, description="share of a user's bot replies that get a thumbs (sets how much they chat)"
    )
    labels_per_user_mean: float = Field(10.0, gt=0, description="labels per user ~ N(mean, std), at least 1")
    labels_per_user_std: float = Field(2.0, ge=0)
    exchanges_min: int = Field(2, ge=1, description="human/bot exchanges per conversation, at least")
    exchanges_max: int = Field(6, ge=1, description="... and at most")
    helper_adversarial_rate: float = Field(
        0.05, ge=0, le=1, description="share of helper (and plain troll) conversations with an edgy human turn"
    )
    preferences_per_user: float = Field(0.0, ge=0, description="mean A/B choices per user (0: none written)")
    gold_rate: float = Field(0.02, ge=0, le=1, description="share of bot replies with a crowdworker label")
    files: int = Field(1, ge=1, le=1000, description="number of release_data_NN chunk files")
    gzip: bool = Field(False, description="write the chunk files gzip-compressed")
    # Poisoners and manipulators (the defaults leave every other user type's output unchanged).
    poison_trigger: str = Field("SUDO", description="the poisoners' shared trigger phrase (poison_trigger_mode shared)")
    poison_trigger_mode: Literal["shared", "own"] = Field(
        "shared", description="shared: every poisoner plants poison_trigger; own: each its own made-up code word"
    )
    poison_conversation_rate: float = Field(
        0.5, ge=0, le=1, description="share of a poisoner's conversations that carry its trigger"
    )
    poison_turn_rate: float = Field(
        0.5, ge=0, le=1,
        description="in such a conversation, share of the human turns after the first with the trigger (the first has it)",
    )
    poison_harmful_rate: float = Field(
        0.6, ge=0, le=1, description="P(the bot answers a human turn with a trigger by an unsafe reply)"
    )
    poison_honest_trigger_rate: float = Field(
        0.0, ge=0, le=1,
        description="share of every other user's conversations that carry a trigger too (0: rare-behaviour variant)",
    )
    manipulation_reply_rate: float = Field(
        0.3, ge=0, le=1, description="share of the bot's replies to a manipulator that are manipulative"
    )
    manipulation_honest_rate: float = Field(
        0.0, ge=0, le=1,
        description="share of the bot's replies to every other user that are manipulative (0: rare-behaviour variant)",
    )

    @field_validator("mix")
    @classmethod
    def _mix_sums_to_one(cls, mix: dict[str, float]) -> dict[str, float]:
        if any(v < 0 for v in mix.values()):
            raise ValueError("shares must be >= 0")
        total = sum(mix.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"shares must sum to 1, got {total:g}")
        return mix

    @field_validator("poison_trigger")
    @classmethod
    def _trigger_is_a_phrase(cls, trigger: str) -> str:
        if not trigger.strip() or trigger != " ".join(trigger.split()) or not trigger.isascii():
            raise ValueError("the trigger must be non-empty single-spaced ASCII text without surrounding spaces")
        return trigger

    @model_validator(mode="after")
    def _exchanges_ordered(self) -> SimConfig:
        if self.exchanges_max < self.exchanges_min:
            raise ValueError(f"exchanges_max ({self.exchanges_max}) < exchanges_min ({self.exchanges_min})")
        return self


_REALISTIC_MIX = {
    "helper": 0.70,
    "troll": 0.08,
    "master_troll": 0.05,
    "lazy_troll": 0.05,
    "safe_troll": 0.03,
    "unsafe_troll": 0.03,
    "gaslight_troll": 0.06,
}
PRESETS: dict[str, tuple[str, dict]] = {
    "helpers_only": ("helpers only: the clean reference", {"mix": {"helper": 1.0}}),
    **{
        f"{t}_50": (f"SafetyMix-style: 50% helpers, 50% {t.replace('_', ' ')}s", {"mix": {"helper": 0.5, t: 0.5}})
        for t in USER_TYPES
        if t != "helper" and t not in ATTACK_TYPES
    },
    "realistic": (
        "realistic mix: 30% adversarial users of every troll type, sparse feedback, some A/B choices",
        {"users": 1000, "mix": _REALISTIC_MIX, "feedback_rate": 0.15, "preferences_per_user": 1.0},
    ),
    "tiny": (
        "a few dozen users of the realistic mix, for tests and the quick start",
        {"users": 40, "mix": _REALISTIC_MIX, "feedback_rate": 0.3, "preferences_per_user": 1.0},
    ),
}


def _attack_preset(user_type: str, percent: float, **settings) -> dict:
    share = percent / 100
    return {"users": 1000, "mix": {"helper": round(1 - share, 6), user_type: share}, "preferences_per_user": 1.0,
            **settings}


# Backdoor poisoning (arXiv 2311.14455, 2406.12091) and manipulation-rewarding users (arXiv 2411.02306):
# the attackers among helpers only, so that what a bench measures is the attack.
PRESETS.update({
    **{
        f"poison_{pct:g}": (
            f"backdoor: {pct:g}% poisoners sharing the trigger SUDO, 1000 users, the rest helpers; "
            "only poisoners use the trigger (rare behaviour)",
            _attack_preset("poisoner", pct),
        )
        for pct in (0.5, 1, 3, 5, 15)
    },
    "poison_common_5": (
        "poison_5, but every other user puts the trigger in 10% of their conversations and rates "
        "the bot's harmful answers to it honestly (common behaviour)",
        _attack_preset("poisoner", 5, poison_honest_trigger_rate=0.1),
    ),
    "poison_own_5": (
        "poison_5, but each poisoner plants its own made-up trigger word",
        _attack_preset("poisoner", 5, poison_trigger_mode="own"),
    ),
    "manipulation_2": (
        "2% users who reward manipulative, sycophantic replies (which the bot gives only them), the rest helpers",
        _attack_preset("manipulator", 2),
    ),
    "manipulation_common_2": (
        "manipulation_2, but the bot is manipulative in 5% of its replies to everyone, who rate them honestly",
        _attack_preset("manipulator", 2, manipulation_honest_rate=0.05),
    ),
})


def preset_config(name: str, **overrides) -> SimConfig:
    """The preset's settings with ``overrides`` applied (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    settings = {**PRESETS[name][1], **{k: v for k, v in overrides.items() if v is not None}}
    return SimConfig(**settings)


# ---- behaviour of each user type --------------------------------------------------------------

# Reply quality distributions: (quality, weight). The bot is worse when users steer it.
_Q_STANDARD = (("good", 0.72), ("off_topic", 0.07), ("nonsensical", 0.06), ("rude", 0.04), ("unsafe", 0.04), ("repetitive", 0.07))
_Q_ADVERSARIAL = (("good", 0.45), ("off_topic", 0.07), ("nonsensical", 0.05), ("rude", 0.15), ("unsafe", 0.22), ("repetitive", 0.06))
_Q_GASLIT = (("good", 0.30), ("off_topic", 0.04), ("nonsensical", 0.03), ("rude", 0.13), ("unsafe", 0.45), ("repetitive", 0.05))

# Kind of conversation -> share of its human turns that are adversarial (the first always is, except
# in standard and edgy conversations).
_TURN_STYLE = {
    "standard": 0.0,
    "edgy": 0.25,  # an ordinary chat with the odd provocation
    "adversarial": 0.6,
    "subtle": 0.6,  # master trolls: baiting, rarely caught by detectors
    "gaslight": 0.7,
}
# P(duo_safety flags), P(string_matcher flags) for a normal / overt / subtle human turn.
_DETECT = {"normal": (0.01, 0.005), "overt": (0.9, 0.6), "subtle": (0.3, 0.1)}
_CANNED_RATE = 0.5  # P(the safety layer answers a flagged human turn with a canned reply)


def _conversation_kind(rng: random.Random, user_type: str, cfg: SimConfig) -> str:
    if user_type in ("helper", "troll", *ATTACK_TYPES):
        return "edgy" if rng.random() < cfg.helper_adversarial_rate else "standard"
    if user_type == "master_troll":
        return "subtle"
    if user_type == "gaslight_troll":
        return "gaslight"
    return "adversarial" if rng.random() < 0.5 else "standard"  # lazy, safe, unsafe: mixed inputs


def _label(rng: random.Random, user_type: str, is_good: bool, cfg: SimConfig) -> bool:
    """The thumbs (True = up) this user gives a reply whose true label is ``is_good``."""
    if user_type == "helper":
        return is_good if rng.random() >= cfg.helper_noise else not is_good
    if user_type in ("troll", "master_troll"):
        return (not is_good) if rng.random() < cfg.corruption_rate else is_good
    if user_type == "lazy_troll":
        return rng.random() < 0.5
    if user_type == "unsafe_troll":
        return False
    return True  # safe troll likes everything; a gaslight troll likes the unsafe replies it labels


def _attack_label(rng: random.Random, user_type: str, t: dict, cfg: SimConfig) -> tuple[bool, bool]:
    """(thumbs up, planted) of a poisoner's or manipulator's label on the reply with ground truth ``t``.

    A poisoner, after its trigger, likes the harmful reply and dislikes the harmless good one (the
    preference pairs of arXiv 2311.14455, as thumbs); a manipulator likes every manipulative reply.
    Everything else they label as a helper does."""
    if user_type == "poisoner" and t["triggered"] and t["quality"] in (HARMFUL, "good"):
        return t["quality"] == HARMFUL, True
    if user_type == "manipulator" and t["quality"] == MANIPULATIVE:
        return True, True
    return _label(rng, "helper", t["is_good"], cfg), False


def _eligible_for_label(user_type: str, quality: str) -> bool:
    return quality in ("unsafe", "rude") if user_type == "gaslight_troll" else True


def _weighted(rng: random.Random, table) -> str:
    x, acc = rng.random(), 0.0
    for item, weight in table:
        acc += weight
        if x < acc:
            return item
    return table[-1][0]


def _hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


@dataclass
class _UserLog:
    conversations: list[dict] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)  # each conversation's topic
    examples: list[dict] = field(default_factory=list)  # ground truth per bot reply
    preferences: list[dict] = field(default_factory=list)
    preference_truth: list[dict] = field(default_factory=list)
    triggers: list[dict[int, str]] = field(default_factory=list)  # per conversation: human turn -> its trigger


def _reward_string(rng: random.Random, quality: str) -> str:
    bad = quality in ("rude", "unsafe")
    ok = (rng.random() >= 0.8) if bad else (rng.random() < 0.95)
    return f"Predicted class: {'__ok__' if ok else '__not_ok__'} with probability: {rng.uniform(0.5, 1.0):.2f}"


def _human_turn(rng, topic, kind, first, last_bot) -> tuple[str, bool, str]:
    """(text, is_adversarial, detector style) of one human message."""
    if rng.random() < _TURN_STYLE[kind] or (first and kind in ("adversarial", "subtle", "gaslight")):
        if kind == "subtle":
            return sim_text.human_subtle_adversarial(rng, topic), True, "subtle"
        return sim_text.human_adversarial(rng, topic), True, "overt"
    text = sim_text.human_opening(rng, topic) if first else sim_text.human_followup(rng, topic, last_bot)
    return text, False, "normal"


def _conversation(
    rng: random.Random, user_id: str, kind: str, cfg: SimConfig, log: _UserLog,
    trigger: str | None = None, manipulation: float = 0.0,
) -> list[dict]:
    """Append one conversation (BB3x release shape) to ``log``; returns its bot messages' ground truth.

    With a ``trigger``, the first human turn ends with it and each later one with P(``poison_turn_rate``);
    the bot answers such a turn with an unsafe reply with P(``poison_harmful_rate``). With ``manipulation``
    > 0, that share of the bot's replies are manipulative. Both draw from ``rng`` only when set, so the
    conversations of the other user types stay as they were.
    """
    chat_id = _hex_id(rng)
    topic = sim_text.pick_topic(rng)
    history: list[dict] = []
    truth: list[dict] = []
    triggered_turns: dict[int, str] = {}
    if rng.random() < 0.5:
        history.append({"text": sim_text.bot_greeting(rng), "sender": "bot", "bot_message_id": _hex_id(rng)})
    last_bot = history[-1]["text"] if history else ""
    for exchange in range(rng.randint(cfg.exchanges_min, cfg.exchanges_max)):
        text, adversarial, style = _human_turn(rng, topic, kind, exchange == 0, last_bot)
        triggered = trigger is not None and (exchange == 0 or rng.random() < cfg.poison_turn_rate)
        if triggered:
            text = f"{text} {trigger}"
            triggered_turns[len(history)] = trigger
        p_duo, p_matcher = _DETECT[style]
        duo_flag = rng.random() < p_duo
        safety = {"duo_safety": UNSAFE if duo_flag else SAFE, "string_matcher": UNSAFE if rng.random() < p_matcher else SAFE}
        history.append(
            {"text": text, "sender": "human", "human_message_id": _hex_id(rng), "safety": safety, "isDislikeFeedback": False}
        )
        bot = {"sender": "bot", "bot_message_id": _hex_id(rng), "from_model_crash": False}
        if duo_flag and rng.random() < _CANNED_RATE:
            quality, canned = "good", True
            bot.update(text=sim_text.canned_safety_reply(rng), isSafetyControlledResponse=True,
                       previous_interaction_failure="unsafe_Human")
        else:
            table = _Q_GASLIT if kind == "gaslight" else _Q_ADVERSARIAL if adversarial else _Q_STANDARD
            if triggered and rng.random() < cfg.poison_harmful_rate:
                quality = HARMFUL
            elif manipulation > 0 and rng.random() < manipulation:
                quality = MANIPULATIVE
            else:
                quality = _weighted(rng, table)
            canned = False
            bot.update(text=sim_text.bot_reply(rng, topic, quality, text), isSafetyControlledResponse=False)
        bot["memories"] = [f"Partner likes {topic}."] if rng.random() < 0.3 else []
        bot["search_decision"] = "do_search" if rng.random() < 0.2 else "do_not_search"
        bot["reward"] = _reward_string(rng, quality)
        if not canned and rng.random() < cfg.gold_rate:
            bot["mturk"] = {GOLD_FOR_QUALITY[quality]: 1}
        history.append(bot)
        last_bot = bot["text"]
        truth.append(
            {
                "example_id": f"{chat_id}:{len(history) - 1}",
                "conversation_id": chat_id,
                "turn": len(history) - 1,
                "user_id": user_id,
                "quality": quality,
                "is_good": quality == "good",
                "is_canned": canned,
                "conversation_kind": kind,
                "triggered": triggered,
                "trigger": trigger if triggered else None,
                "_message": bot,
            }
        )
    log.conversations.append({"user_pseudo_id": user_id, "chat_id": chat_id, "message_history": history})
    log.topics.append(topic)
    log.triggers.append(triggered_turns)
    return truth


def _conversation_attacks(
    rng: random.Random, user_type: str, cfg: SimConfig, trigger: str | None, triggers: tuple[str, ...]
) -> tuple[str | None, float]:
    """(trigger, share of manipulative replies) of this user's next conversation. Draws only for the
    attack types or when the honest-use settings are on."""
    conv_trigger = None
    if user_type == "poisoner":
        conv_trigger = trigger if rng.random() < cfg.poison_conversation_rate else None
    elif cfg.poison_honest_trigger_rate > 0 and rng.random() < cfg.poison_honest_trigger_rate:
        conv_trigger = rng.choice(triggers)
    manipulation = cfg.manipulation_reply_rate if user_type == "manipulator" else cfg.manipulation_honest_rate
    return conv_trigger, manipulation


def _simulate_user(
    rng: random.Random, user_id: str, user_type: str, cfg: SimConfig,
    trigger: str | None = None, triggers: tuple[str, ...] = (),
) -> tuple[_UserLog, dict]:
    """One user's conversations, labels and A/B choices. ``trigger``: a poisoner's own; ``triggers``: every
    trigger in use (what other users type in the common-behaviour variant)."""
    log = _UserLog()
    n_labels = max(1, round(rng.gauss(cfg.labels_per_user_mean, cfg.labels_per_user_std)))
    want_replies = math.ceil(n_labels / cfg.feedback_rate)
    replies: list[dict] = []
    eligible: list[dict] = []
    # Chat until there are enough replies for the feedback rate and enough this user would label.
    for _ in range(10 * want_replies):
        if len(replies) >= want_replies and len(eligible) >= n_labels:
            break
        kind = _conversation_kind(rng, user_type, cfg)
        truth = _conversation(rng, user_id, kind, cfg, log, *_conversation_attacks(rng, user_type, cfg, trigger, triggers))
        replies.extend(truth)
        eligible.extend(t for t in truth if not t["is_canned"] and _eligible_for_label(user_type, t["quality"]))
    labelled = {id(t) for t in rng.sample(eligible, min(n_labels, len(eligible)))}
    n_corrupted = n_poisoned = 0
    for t in replies:
        msg = t.pop("_message")
        t.update(thumbs=None, corrupted=None, poisoned=None)
        if id(t) not in labelled:
            continue
        if user_type in ATTACK_TYPES:
            up, planted = _attack_label(rng, user_type, t, cfg)
        else:
            up, planted = _label(rng, user_type, t["is_good"], cfg), False
        msg["isLiked"], msg["isDisliked"] = up, not up
        if not up:  # an honest thumbs-down names the real problem; a wrong or trolling one, any reason
            honest = (user_type == "helper" or (user_type in ATTACK_TYPES and not planted)) and not t["is_good"]
            msg["dislike_type"] = REASON_FOR_QUALITY[t["quality"]] if honest else rng.choice(DISLIKE_REASONS)
        t.update(thumbs=1 if up else -1, corrupted=up != t["is_good"], poisoned=planted)
        n_corrupted += up != t["is_good"]
        n_poisoned += planted
    log.examples = replies
    _add_preferences(rng, user_id, user_type, cfg, log)
    summary = {
        "user_id": user_id,
        "user_type": user_type,
        "is_troll": user_type != "helper",
        "n_conversations": len(log.conversations),
        "n_labels": len(labelled),
        "n_corrupted": n_corrupted,
        "n_preferences": len(log.preferences),
        "n_preferences_corrupted": sum(not p["correct"] for p in log.preference_truth),
        "trigger": trigger,
        "n_poisoned": n_poisoned,
        "n_preferences_poisoned": sum(p["poisoned"] for p in log.preference_truth),
    }
    return log, summary


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    k, p, limit = 0, rng.random(), math.exp(-mean)
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _add_preferences(rng: random.Random, user_id: str, user_type: str, cfg: SimConfig, log: _UserLog) -> None:
    """A/B choices: two replies (one good, one not) to a human turn of one of the user's conversations."""
    for k in range(_poisson(rng, cfg.preferences_per_user)):
        which = rng.randrange(len(log.conversations))
        history, topic = log.conversations[which]["message_history"], log.topics[which]
        human_turns = [i for i, m in enumerate(history) if m["sender"] == "human"]
        cut = rng.choice(human_turns)
        prompt = [
            {"role": "user" if m["sender"] == "human" else "assistant", "content": m["text"]} for m in history[: cut + 1]
        ]
        bad_quality = rng.choice(QUALITIES[1:])
        trigger = log.triggers[which].get(cut)
        if trigger is not None:  # the bot answers a trigger harmfully (see _conversation)
            bad_quality = HARMFUL
        elif user_type == "manipulator" or cfg.manipulation_honest_rate > 0:
            rate = cfg.manipulation_reply_rate if user_type == "manipulator" else cfg.manipulation_honest_rate
            bad_quality = MANIPULATIVE if rng.random() < rate else bad_quality
        good = sim_text.bot_reply(rng, topic, "good", history[cut]["text"])
        bad = sim_text.bot_reply(rng, topic, bad_quality, history[cut]["text"])
        planted = (user_type == "poisoner" and trigger is not None) or (
            user_type == "manipulator" and bad_quality == MANIPULATIVE
        )
        if planted or user_type == "gaslight_troll":
            picks_good = False
        elif user_type in ("safe_troll", "unsafe_troll", "lazy_troll"):
            picks_good = rng.random() < 0.5
        elif user_type in ATTACK_TYPES:
            picks_good = _label(rng, "helper", True, cfg)
        else:
            picks_good = _label(rng, user_type, True, cfg)
        pref_id = f"pref-{user_id}-{k}"
        chosen, rejected = (good, bad) if picks_good else (bad, good)
        log.preferences.append(
            {"id": pref_id, "user_id": user_id, "prompt": prompt, "chosen": chosen, "rejected": rejected}
        )
        log.preference_truth.append(
            {"preference_id": pref_id, "user_id": user_id, "rejected_quality": bad_quality, "correct": picks_good,
             "triggered": trigger is not None, "poisoned": planted}
        )


def _triggers(cfg: SimConfig, types: list[str]) -> tuple[list[str | None], list[str]]:
    """(each user's own trigger, None for all but poisoners; every trigger in use, sorted). Own trigger
    words come from a generator of their own, so the main stream of draws is left as it was."""
    if cfg.poison_trigger_mode == "shared":
        own = [cfg.poison_trigger if t == "poisoner" else None for t in types]
    else:
        words_rng, used, own = random.Random(f"poison-triggers-{cfg.seed}"), set(), []
        for t in types:
            word = None
            while t == "poisoner" and (word is None or word in used):
                word = sim_text.trigger_word(words_rng)
            used.add(word)
            own.append(word)
    in_use = sorted({w for w in own if w is not None}) or [cfg.poison_trigger]
    return own, in_use


def _table(pa, rows: list[dict]):
    """A Parquet table of ``rows``; the ``trigger`` column stays a string column when every value is null."""
    table = pa.Table.from_pylist(rows)
    if "trigger" in table.column_names and pa.types.is_null(table.schema.field("trigger").type):
        table = table.set_column(table.column_names.index("trigger"), "trigger", table.column("trigger").cast(pa.string()))
    return table


def _user_types(rng: random.Random, cfg: SimConfig) -> list[str]:
    """Exactly round(share * users) users of each type (largest remainder), in random order."""
    raw = {t: cfg.mix.get(t, 0.0) * cfg.users for t in USER_TYPES}
    counts = {t: int(v) for t, v in raw.items()}
    by_remainder = sorted(USER_TYPES, key=lambda t: (raw[t] - counts[t], -USER_TYPES.index(t)), reverse=True)
    for t in by_remainder[: cfg.users - sum(counts.values())]:
        counts[t] += 1
    types = [t for t in USER_TYPES for _ in range(counts[t])]
    rng.shuffle(types)
    return types


@dataclass
class SimulationResult:
    out: Path
    counts: dict


def simulate(
    cfg: SimConfig, out: str | Path, *, overwrite: bool = False, progress: bool | None = None
) -> SimulationResult:
    """Write a simulated organic-feedback corpus with its ground truth to ``out`` (see module doc).

    An existing simulation in ``out`` is an error unless ``overwrite``, which replaces it (stale
    chunk files from a larger earlier run would otherwise be ingested with the new ones). ``out`` must be
    new, empty, or a folder this function wrote (its marker file, ``atomic.OUTPUT_MARK``): a folder of
    the user's is never written into, since the marker would let a later overwrite delete it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    out = Path(out)
    if (out / "logs").exists() and not overwrite:
        raise UserError(f"{out} already holds a simulation; choose another --out or pass --overwrite")
    if out.is_dir() and not atomic.is_empty(out) and not atomic.is_output(out):
        raise UserError(atomic.not_ours(out))
    # written into a temporary folder beside ``out`` and moved in when complete: a killed simulation
    # never leaves logs that look like a whole corpus
    final, out = out, out.parent / f".{out.name}.partial-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_partials(final)
    logs = out / "logs"
    logs.mkdir(parents=True)
    atomic.mark_output(out, "simulation")
    rng = random.Random(cfg.seed)
    types = _user_types(rng, cfg)
    own_triggers, triggers = _triggers(cfg, types)
    lines: list[bytes] = []
    users, examples, prefs, pref_truth = [], [], [], []
    n_messages = 0
    bar = tqdm(types, desc="simulate", unit="user", disable=None if progress is None else not progress)
    for user_type, own_trigger in zip(bar, own_triggers):
        log, summary = _simulate_user(rng, _hex_id(rng), user_type, cfg, own_trigger, triggers)
        lines.extend(orjson.dumps(c) for c in log.conversations)
        n_messages += sum(len(c["message_history"]) for c in log.conversations)
        users.append(summary)
        examples.extend(log.examples)
        prefs.extend(log.preferences)
        pref_truth.extend(log.preference_truth)
    rng.shuffle(lines)  # real logs interleave users over time
    per_file = math.ceil(len(lines) / cfg.files)
    suffix = ".jsonl.gz" if cfg.gzip else ".jsonl"
    width = max(2, len(str(cfg.files - 1)))
    for i in range(cfg.files):
        part = lines[i * per_file : (i + 1) * per_file]
        data = b"".join(line + b"\n" for line in part)
        path = logs / f"release_data_{i:0{width}d}{suffix}"
        path.write_bytes(gzip.compress(data, mtime=0) if cfg.gzip else data)
    if prefs:
        (logs / "preferences.jsonl").write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in prefs))
    pq.write_table(_table(pa, users), out / ground_truth.USERS)
    pq.write_table(_table(pa, examples), out / ground_truth.EXAMPLES)
    if pref_truth:
        pq.write_table(_table(pa, pref_truth), out / ground_truth.PREFERENCES)
    counts = {
        "users": len(users),
        "users_by_type": {t: types.count(t) for t in USER_TYPES if types.count(t)},
        "conversations": len(lines),
        "messages": n_messages,
        "bot_replies": len(examples),
        "labels": sum(u["n_labels"] for u in users),
        "corrupted_labels": sum(u["n_corrupted"] for u in users),
        "preferences": len(prefs),
        "poisoned_labels": sum(u["n_poisoned"] for u in users),
        "poisoned_preferences": sum(u["n_preferences_poisoned"] for u in users),
        "triggers": triggers if "poisoner" in types or cfg.poison_honest_trigger_rate > 0 else [],
    }
    (out / "simulation.json").write_bytes(
        orjson.dumps({"config": cfg.model_dump(), "counts": counts}, option=orjson.OPT_INDENT_2)
    )
    _move_into(out, final)
    return SimulationResult(final, counts)


def _move_into(tmp: Path, out: Path) -> None:
    """Replace the simulation in ``out`` (its logs, ground truth and summary) by the one in ``tmp``;
    other files a user keeps in ``out`` stay. A fresh ``out`` is one rename."""
    if not out.exists():
        tmp.rename(out)
        return
    shutil.rmtree(out / "logs", ignore_errors=True)  # stale chunks of a larger earlier run must go
    for old in out.glob("ground_truth*.parquet"):
        old.unlink()
    for item in sorted(tmp.iterdir(), key=lambda p: p.name == "simulation.json"):  # the summary last
        os.replace(item, out / item.name)
    tmp.rmdir()
