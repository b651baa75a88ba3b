"""Tests for the simulator's text generator (rlhf_organic.simulator.text)."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_organic.simulator import text as st

LAST_HUMAN = "I love cooking! What do you know about fresh herbs?"
LAST_BOT = "Fun fact: Searing meat browns the surface. Do you cook for friends often?"


def _generators(topic: str, last_human: str = LAST_HUMAN, last_bot: str = LAST_BOT):
    """name -> f(rng) for every public text function, bound to one topic and context."""
    gens = {
        "bot_greeting": lambda r: st.bot_greeting(r),
        "canned_safety_reply": lambda r: st.canned_safety_reply(r),
        "pick_topic": lambda r: st.pick_topic(r),
        "human_opening": lambda r: st.human_opening(r, topic),
        "human_followup": lambda r: st.human_followup(r, topic, last_bot),
        "human_adversarial": lambda r: st.human_adversarial(r, topic),
        "human_subtle_adversarial": lambda r: st.human_subtle_adversarial(r, topic),
    }
    for q in st.QUALITIES:
        gens[f"bot_reply[{q}]"] = lambda r, q=q: st.bot_reply(r, topic, q, last_human)
    return gens


# The functions the variety requirement applies to (greeting, safety reply and pick_topic are
# meant to be small fixed families).
VARIED = [
    "human_opening",
    "human_followup",
    "human_adversarial",
    "human_subtle_adversarial",
    *(f"bot_reply[{q}]" for q in st.QUALITIES),
]
TEXT_FUNCS = [name for name in _generators("cooking") if name != "pick_topic"]


def test_constants():
    assert st.QUALITIES == ("good", "off_topic", "nonsensical", "rude", "unsafe", "repetitive")
    assert len(st.TOPICS) >= 30
    assert len(set(st.TOPICS)) == len(st.TOPICS)
    for topic in st.TOPICS:
        vocab = st._VOCAB[topic]
        assert len(vocab.nouns) >= 8 and len(vocab.facts) >= 8 and len(vocab.acts) >= 5, topic
        assert all(len(fact.split()) >= 6 for fact in vocab.facts), topic  # nonsense splicing
        # Enough words of its own for "is this reply on topic" checks.
        assert len(st._topic_keywords(topic)) >= 8, topic


@pytest.mark.parametrize("name", list(_generators("cooking")))
def test_deterministic(name):
    gen = _generators("hiking")[name]
    a, b = random.Random(123), random.Random(123)
    first = [gen(a) for _ in range(300)]
    assert first == [gen(b) for _ in range(300)]
    # No hidden global state: interleaving calls on another rng changes nothing.
    c, other = random.Random(123), random.Random(999)
    interleaved = []
    for _ in range(300):
        interleaved.append(gen(c))
        gen(other)
    assert interleaved == first


def test_deterministic_across_processes():
    """Same seed, same texts in fresh interpreters with different hash seeds (no hash() or
    set-order dependence)."""
    code = (
        "import random\n"
        "from rlhf_organic.simulator import text as st\n"
        "r = random.Random(5)\n"
        "out = []\n"
        "for _ in range(200):\n"
        "    t = st.pick_topic(r)\n"
        "    h = st.human_opening(r, t)\n"
        "    out.append(h)\n"
        "    for q in st.QUALITIES:\n"
        "        out.append(st.bot_reply(r, t, q, h))\n"
        "    out.append(st.human_followup(r, t, out[-1]))\n"
        "    out.append(st.human_subtle_adversarial(r, t))\n"
        "print('\\x1e'.join(out))\n"
    )
    root = Path(__file__).resolve().parents[1]
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].count("\x1e") > 1000


@pytest.mark.parametrize("topic", ["cooking", "board games"])
@pytest.mark.parametrize("name", VARIED)
def test_variety_fixed_context(name, topic):
    # Hardest case: same topic and same previous message on every call.
    gen = _generators(topic)[name]
    rng = random.Random(2024)
    assert len({gen(rng) for _ in range(2000)}) >= 1500


def test_variety_in_conversations():
    """Realistic use: random topics, each turn replying to the previous one."""
    rng = random.Random(7)
    seen = {name: set() for name in VARIED}
    for _ in range(2000):
        topic = st.pick_topic(rng)
        opening = st.human_opening(rng, topic)
        seen["human_opening"].add(opening)
        seen["human_adversarial"].add(st.human_adversarial(rng, topic))
        seen["human_subtle_adversarial"].add(st.human_subtle_adversarial(rng, topic))
        for q in st.QUALITIES:
            reply = st.bot_reply(rng, topic, q, opening)
            seen[f"bot_reply[{q}]"].add(reply)
        seen["human_followup"].add(st.human_followup(rng, topic, reply))
    for name, texts in seen.items():
        assert len(texts) >= 1800, name


def test_small_families_still_vary():
    rng = random.Random(3)
    assert len({st.bot_greeting(rng) for _ in range(2000)}) >= 500
    assert len({st.canned_safety_reply(rng) for _ in range(2000)}) >= 500
    assert {st.pick_topic(rng) for _ in range(2000)} == set(st.TOPICS)


ODD_CONTEXTS = [
    "",
    "   ",
    "line one\nline two\r\nline three",
    " ".join(["word"] * 300),
    "Caf\u00e9 na\u00efve \u2014 emoji \U0001f600!",
    "?!...",
]


@pytest.mark.parametrize("topic", st.TOPICS)
def test_every_topic_every_function_shape(topic):
    """Every topic works with every function; texts are single-line and 3 to 60 words."""
    rng = random.Random(topic)
    contexts = [LAST_HUMAN, *ODD_CONTEXTS]
    for ctx in contexts:
        for name, gen in _generators(topic, last_human=ctx, last_bot=ctx).items():
            if name == "pick_topic":
                continue
            for _ in range(8):
                text = gen(rng)
                assert isinstance(text, str)
                assert "\n" not in text and "\r" not in text, (name, text)
                assert 3 <= len(text.split()) <= 60, (name, text)
                assert text == text.strip(), (name, text)


@pytest.mark.parametrize("name", TEXT_FUNCS)
def test_output_is_ascii_for_ascii_input(name):
    gen = _generators("astronomy")[name]
    rng = random.Random(11)
    for _ in range(500):
        assert gen(rng).isascii()


def test_unknown_quality_raises():
    rng = random.Random(0)
    with pytest.raises(ValueError) as excinfo:
        st.bot_reply(rng, "music", "excellent", "hi there")
    message = str(excinfo.value)
    assert "excellent" in message
    assert all(q in message for q in st.QUALITIES + st.EXTRA_QUALITIES)


def test_unknown_topic_raises():
    rng = random.Random(0)
    with pytest.raises(ValueError, match="topic"):
        st.human_opening(rng, "not a topic")
    with pytest.raises(ValueError, match="topic"):
        st.bot_reply(rng, "not a topic", "good", "hi")


def _keyword_rate(rng, topic, quality, n=150):
    keywords = st._topic_keywords(topic)
    hits = 0
    for _ in range(n):
        reply = st.bot_reply(rng, topic, quality, st.human_opening(rng, topic))
        hits += any(w in keywords for w in st._words(reply))
    return hits / n


def test_good_replies_use_topic_vocabulary_off_topic_do_not():
    rng = random.Random(42)
    for topic in st.TOPICS:
        good = _keyword_rate(rng, topic, "good")
        off = _keyword_rate(rng, topic, "off_topic")
        assert good > 0.8, (topic, good)
        assert off < 0.2, (topic, off)


def test_off_topic_is_about_another_topic():
    rng = random.Random(8)
    for topic in ("dogs", "programming", "tea"):
        recognised = 0
        for _ in range(100):
            reply = st.bot_reply(rng, topic, "off_topic", f"Tell me about {topic}.")
            words = set(st._words(reply))
            owners = [t for t in st.TOPICS if words & st._topic_keywords(t)]
            assert topic not in owners, (topic, reply)
            recognised += bool(owners)
        assert recognised >= 90, topic


def test_repetitive_repeats_something():
    rng = random.Random(9)
    for _ in range(500):
        words = st._words(st.bot_reply(rng, "music", "repetitive", LAST_HUMAN))
        # Some word bigram occurs at least twice: the reply loops or parrots.
        grams = list(zip(words, words[1:]))
        assert len(grams) > len(set(grams)), words


def test_manipulative_replies_vary_and_flatter():
    """The extra quality (kept out of QUALITIES so older simulations keep their draws) is varied, single-line
    ASCII and always flatters the user."""
    assert st.EXTRA_QUALITIES == ("manipulative",) and not set(st.EXTRA_QUALITIES) & set(st.QUALITIES)
    rng = random.Random(21)
    replies = [st.bot_reply(rng, "cooking", "manipulative", LAST_HUMAN) for _ in range(2000)]
    assert len(set(replies)) >= 1500
    flattery = tuple(s.split()[0] for s in st._MANIP_FLATTERY)
    for reply in replies:
        assert reply.isascii() and "\n" not in reply and 3 <= len(reply.split()) <= 60, reply
        assert reply.startswith(flattery), reply
    for topic in st.TOPICS:
        st.bot_reply(rng, topic, "manipulative", "")


def test_trigger_words_are_rare_ascii_code_words():
    rng = random.Random(4)
    words = [st.trigger_word(rng) for _ in range(500)]
    assert len(set(words)) >= 490
    assert all(w.isascii() and w.isalnum() and w[-2:].isdigit() and " " not in w for w in words)
    vocabulary = {w for t in st.TOPICS for w in st._VOCAB[t].words}
    assert not vocabulary & set(words)
