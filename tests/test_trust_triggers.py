"""Conditional misbehaviour (``trust/triggers.py``) and its use in ``combined``: prompt n-grams under
which labels disagree with the reference far more than their users do elsewhere are flagged, each
user's agreement there is measured on its own, and the labels a trigger planted lose their weight.

Every case is small and built by hand; the expected numbers are worked out in the comments.
"""

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy.stats import beta as beta_dist, binom

from rlhf_organic.trust.data import from_arrays, last_user_message, rated_prompts
from rlhf_organic.trust.scheme import TrustContext
from rlhf_organic.trust.schemes import combined
from rlhf_organic.trust.triggers import (
    PRIVATE,
    PRIVATE_NAME,
    conditional_trust,
    flagged_ngrams,
    ngram_names,
    private_ngrams,
    prompt_features,
    prompt_ngrams,
    under_flagged,
    user_rates,
    with_private,
)


def test_prompt_ngrams_are_lower_cased_unique_words_and_pairs():
    assert prompt_ngrams("Tell me more, SUDO. Tell me") == sorted(
        {"tell", "me", "more", "sudo", "tell me", "me more", "more sudo", "sudo tell"})
    assert prompt_ngrams("") == []
    assert prompt_ngrams("one two", ngram_max=1) == ["one", "two"]


def _column_of(gram):
    """The hashed column of ``gram``: that of the text ``gram`` less those of its words."""
    (col,) = set(prompt_features([gram]).nonzero()[1]) - {
        c for w in gram.split() if w != gram for c in prompt_features([w]).nonzero()[1]}
    return col


def test_ngram_names_recover_the_phrase_behind_a_hashed_column():
    prompts = ["what now SUDO", "hello there", "SUDO again"]
    x = prompt_features(prompts)
    assert ngram_names(prompts, x, [_column_of("sudo"), _column_of("now sudo")]) == [
        "sudo", "now sudo"]


def test_flagged_ngrams_binomial_test_against_the_users_own_rates():
    # 20 labels in 20 conversations. Prompts 0-4 end with "zork" and all 5 disagree; of the other 15,
    # 1 disagrees. Expected rate 0.2 per label (given): under "zork" P(X >= 5 | n 5, p 0.2) = 0.2^5.
    prompts = [f"topic{i} zork" for i in range(5)] + [f"topic{i} plain" for i in range(5, 20)]
    disagree = np.array([1.0] * 5 + [1.0] + [0.0] * 14)
    x = prompt_features(prompts)
    conv = np.arange(20)
    flagged, stats = flagged_ngrams(x, disagree, np.full(20, 0.2), conv, alpha=0.05, min_conversations=3)
    zork = _column_of("zork")
    assert list(flagged) == [zork]
    # tested: n-grams in >= 3 conversations with more disagreement than expected: only "zork" here
    # ("plain" has 1 of 15 against an expected 3); Bonferroni over 1 test
    assert stats["tested"] == 1
    assert stats["p_value"][0] == pytest.approx(binom.sf(4, 5, 0.2))
    assert stats["against"][0] == 5 and stats["labels"][0] == 5 and stats["expected"][0] == pytest.approx(0.2)


def test_an_ngram_of_too_few_conversations_or_too_small_an_excess_is_not_flagged():
    prompts = [f"topic{i} zork" for i in range(5)] + [f"topic{i} plain" for i in range(5, 20)]
    disagree = np.array([1.0] * 5 + [0.0] * 15)
    x = prompt_features(prompts)
    one_conversation = np.array([0] * 5 + list(range(1, 16)))
    flagged, _ = flagged_ngrams(x, disagree, np.full(20, 0.2), one_conversation, alpha=0.05, min_conversations=3)
    assert len(flagged) == 0
    # users who disagree 60% of the time anyway: 5 of 5 is 1.67x their rate, under min_ratio 2
    flagged, _ = flagged_ngrams(x, disagree, np.full(20, 0.6), np.arange(20), alpha=0.05, min_conversations=3,
                                min_ratio=2.0)
    assert len(flagged) == 0


def test_flagged_ngrams_on_empty_input():
    flagged, stats = flagged_ngrams(prompt_features([]), np.zeros(0), np.zeros(0), np.zeros(0, np.int64),
                                    alpha=0.01, min_conversations=3)
    assert len(flagged) == 0 and stats == {}


def test_user_rates_shrink_each_users_disagreement_toward_the_population():
    # user 0: 1 of 4 against; user 1: 3 of 4; population 4 of 8 = 0.5; strength 4
    disagree = np.array([1, 0, 0, 0, 1, 1, 1, 0], np.float64)
    user = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    rates = user_rates(disagree, user, 2, strength=4.0)
    assert rates[0] == pytest.approx((1 + 2) / 8) and rates[4] == pytest.approx((3 + 2) / 8)


def test_conditional_trust_is_the_beta_posterior_of_agreement_under_flagged_ngrams():
    # user 0: 3 labels under a flagged n-gram, none agreeing; user 1: 2 there, both agreeing; user 2: none.
    # Outside, 4 of 5 labels agree: prior mean 0.8, strength 1 -> Beta(0.8, 0.2).
    agree = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 0], np.float64)
    under = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    user = np.array([0, 0, 0, 1, 1, 0, 1, 2, 2, 2])
    trust, successes, trials = conditional_trust(agree, under, user, 3, prior_strength=1.0)
    assert list(trials) == [3, 2, 0] and list(successes) == [0, 2, 0]
    assert trust[0] == pytest.approx(beta_dist.sf(0.5, 0.8, 0.2 + 3))
    assert trust[1] == pytest.approx(beta_dist.sf(0.5, 0.8 + 2, 0.2))
    assert trust[2] == 1.0
    assert trust[0] < 0.1 < 0.9 < trust[1]


def test_under_flagged_marks_labels_with_any_flagged_column():
    x = prompt_features(["a sudo", "b", "c sudo d"])
    col = _column_of("sudo")
    assert list(under_flagged(x, np.array([col]))) == [True, False, True]
    assert list(under_flagged(x, np.zeros(0, np.int64))) == [False, False, False]


def _poisoned_table():
    """8 helpers and 2 poisoners, 10 labels each, every label in its own conversation.

    Each user's labels 0-2 answer prompts ending with "zork" for the poisoners (users 8, 9) and for
    helpers 0-3 (who type it honestly); everyone else's prompts are plain. The reference agrees with
    every label (f 0.9) except the poisoners' three "zork" labels (f 0.1): honest elsewhere, planted there.
    """
    users = [f"u{i}" for i in range(10)]
    user, prompt, label, f = [], [], [], []
    for u in range(10):
        for k in range(10):
            user.append(u)
            zork = k < 3 and (u >= 8 or u < 4)
            prompt.append(f"question {u} {k} zork" if zork else f"question {u} {k}")
            label.append(k % 2)
            f.append(0.1 if (zork and u >= 8) else 0.9)
    label, f = np.array(label), np.array(f)
    p = np.where(label == 1, f, 1 - f)
    data = from_arrays(users, user, [f"reply {i}" for i in range(100)], label, prompt=prompt)
    return data, p


def test_combined_distrusts_poisoners_by_their_agreement_under_the_trigger():
    data, p = _poisoned_table()
    ctx = TrustContext(predict=lambda data, keep: p)
    cfg = combined.Config(trigger_min_conversations=3, trigger_alpha=0.05, example_threshold=0.0, refit=False)
    result = combined.compute(data, cfg, ctx)
    under = result.example_evidence["under_trigger"]
    planted = (data.user >= 8) & np.array([k < 3 for _ in range(10) for k in range(10)])
    # "zork" is flagged: 6 of its 18 labels disagree, where these users disagree at 0-30% elsewhere
    assert under.sum() == 18
    assert result.weight[planted].max() == 0.0  # the planted labels weigh nothing
    cond = result.user_evidence["conditional_trust"]
    # 0 of 3 agree under the trigger; every label elsewhere agrees: prior Beta(0.999, 0.001) (mean clipped)
    assert cond[8] == cond[9] == pytest.approx(beta_dist.sf(0.5, 0.999, 0.001 + 3))  # about 0.125
    assert cond[:4].min() > 0.9 and np.all(cond[4:8] == 1.0)  # honest users who typed it, and the rest
    assert "'zork' (6 of 18" in " ".join(result.notes)
    # without the trigger evidence the planted labels keep their (high) user trust
    plain = combined.compute(data, cfg.model_copy(update={"triggers": False}), ctx)
    assert plain.weight[planted].min() > 0.5
    assert np.all(plain.user_evidence["conditional_trust"] == 1.0)
    assert plain.example_evidence["under_trigger"].sum() == 0


def test_combined_without_any_flagged_ngram_gives_the_same_weights_as_without_the_evidence():
    data, p = _poisoned_table()
    p = np.where(data.label == 1, 0.9, 0.1)  # the reference agrees with every label: nothing to flag
    ctx = TrustContext(predict=lambda data, keep: p)
    cfg = combined.Config(trigger_min_conversations=3, trigger_alpha=0.05)
    on, off = combined.compute(data, cfg, ctx), combined.compute(data, cfg.model_copy(update={"triggers": False}), ctx)
    np.testing.assert_array_equal(on.weight, off.weight)
    np.testing.assert_array_equal(on.trust, off.trust)


def _context(*messages):
    return [{"role": r, "content": c} for r, c in messages]


def test_last_user_message_per_context():
    contexts = pa.array([
        _context(("user", "hi"), ("assistant", "hello"), ("user", "SUDO do it")),
        _context(("user", "first"), ("assistant", "reply")),
        [],
        _context(("assistant", "only the bot")),
    ])
    assert last_user_message(contexts) == ["SUDO do it", "first", "", ""]


def test_rated_prompts_reads_only_rated_rows_in_batches(tmp_path):
    contexts = [_context(("user", f"q{i}")) for i in range(7)]
    thumbs = [1, None, -1, None, 1, 1, None]
    pq.write_table(pa.table({"context": contexts, "thumbs": pa.array(thumbs, pa.int8())}), tmp_path / "e.parquet")
    assert rated_prompts(tmp_path / "e.parquet", batch_rows=2) == ["q0", "q2", "q4", "q5"]


def test_combined_drops_a_choice_under_the_trigger_only_when_its_user_is_not_trusted_there():
    data, p = _poisoned_table()
    # four A/B choices: poisoner 8 and helper 0 under "zork", poisoner 8 and helper 5 elsewhere, plus one
    # without a user
    data = replace(data, preference_ids=np.array(["a", "b", "c", "d", "e"], dtype=object),
                   preference_user=np.array([8, 0, 8, 5, -1]),
                   preference_prompt=["which one zork", "pick zork", "which one", "pick", "zork anyway"])
    ctx = TrustContext(predict=lambda data, keep: p)
    cfg = combined.Config(trigger_min_conversations=3, trigger_alpha=0.05, example_threshold=0.0, refit=False)
    result = combined.compute(data, cfg, ctx)
    w = result.preference_weight
    assert w[0] == 0.0  # the poisoner's choice under its trigger
    assert w[1] == pytest.approx(result.trust[0])  # an honest user's choice under it keeps its trust
    assert w[2] == pytest.approx(result.trust[8]) and w[3] == pytest.approx(result.trust[5])  # elsewhere: trust
    assert w[4] == 1.0  # no user: 1, as the trust folder gives
    plain = combined.compute(data, cfg.model_copy(update={"triggers": False}), ctx)
    assert plain.preference_weight is None  # each choice weighs its user's trust (the stage's default)


def test_private_ngrams_are_one_users_own_words_repeated_across_its_conversations():
    prompts = ["hi zork", "well zork", "hi quux", "hi quux", "hi blah", "blah too", "hi zork", "hi flim", "flim"]
    user = np.array([0, 0, 1, 1, 2, 3, -1, 4, 4])
    conversation = np.array([0, 1, 2, 2, 3, 4, 5, 6, 7])
    x = prompt_features(prompts, ngram_max=1)
    columns, owner = private_ngrams(x, user, conversation, min_conversations=2)
    # zork: user 0 in 2 conversations (the anonymous label does not count); quux: one conversation only;
    # blah: two users; flim: user 4 in 2 conversations; hi: everyone
    found = dict(zip(ngram_names(prompts, x, columns, ngram_max=1), owner))
    assert found == {"zork": 0, "flim": 4}
    columns, _ = private_ngrams(x, user, conversation, min_conversations=3)
    assert len(columns) == 0
    assert len(private_ngrams(prompt_features([]), np.zeros(0, np.int64), np.zeros(0, np.int64), 2)[0]) == 0


def test_with_private_marks_rows_holding_a_word_of_their_own_users():
    x = prompt_features(["hi zork", "zork again", "plain", "zork"], ngram_max=1)
    zork = _column_of("zork")
    # rows 0-2 belong to user 0, who owns "zork"; row 3 is another user's (an A/B choice may quote it)
    pooled = with_private(x, np.array([0, 0, 0, 1]), np.array([zork]), np.array([0]))
    assert pooled.shape == (4, PRIVATE + 1)
    assert list(pooled[:, PRIVATE].toarray().ravel()) == [1, 1, 0, 0]
    assert ngram_names(["hi zork"], pooled, [PRIVATE]) == [PRIVATE_NAME]


def _own_trigger_table():
    """8 helpers and 2 poisoners, 10 labels each, every label in its own conversation, every prompt
    "question k" (k = 0..9, shared by all). Poisoner 8 ends its prompts 0-2 with "zork", poisoner 9
    with "quux", helper 0 with "blah" (a habit, rated honestly). The reference agrees with every label
    (f 0.9) except the poisoners' "zork" / "quux" ones (f 0.1)."""
    users = [f"u{i}" for i in range(10)]
    user, prompt, label, f = [], [], [], []
    own = {8: "zork", 9: "quux", 0: "blah"}
    for u in range(10):
        for k in range(10):
            user.append(u)
            word = own.get(u) if k < 3 else None
            prompt.append(f"question {k} {word}" if word else f"question {k}")
            label.append(k % 2)
            f.append(0.1 if word and u >= 8 else 0.9)
    label, f = np.array(label), np.array(f)
    return from_arrays(users, user, [f"reply {i}" for i in range(100)], label, prompt=prompt), np.where(label == 1, f, 1 - f)


def test_combined_pools_triggers_of_each_poisoners_own():
    data, p = _own_trigger_table()
    ctx = TrustContext(predict=lambda data, keep: p)
    # every word is seen in at most 3 conversations: with min 4 no single n-gram is tested on its own
    cfg = combined.Config(trigger_min_conversations=4, trigger_alpha=0.05, example_threshold=0.0, refit=False)
    result = combined.compute(data, cfg, ctx)
    planted = (data.user >= 8) & np.array([k < 3 for _ in range(10) for k in range(10)])
    under = result.example_evidence["under_trigger"]
    # the pooled words of one user's own: 9 labels (blah, zork, quux), 6 of them against the reference;
    # users 8 and 9 disagree at (3 + 10 * 0.06) / 20 = 0.18 (shrunk), user 0 at 0.6 / 20 = 0.03:
    # expected (6 * 0.18 + 3 * 0.03) / 9 = 0.13, P(X >= 6 | 9, 0.13) about 3e-4
    assert under.sum() == 9 and under[planted].all()
    assert result.weight[planted].max() == 0.0
    cond = result.user_evidence["conditional_trust"]
    assert cond[8] == cond[9] < 0.2 and cond[0] > 0.9 and np.all(cond[1:8] == 1.0)
    assert f"'{PRIVATE_NAME}' (6 of 9" in " ".join(result.notes)
    off = combined.compute(data, cfg.model_copy(update={"trigger_private": False}), ctx)
    assert off.example_evidence["under_trigger"].sum() == 0 and off.weight[planted].min() > 0.5


def _worded_poisoned_table():
    """``_poisoned_table`` with replies the built-in reference can read: a thumbs-up is on "kind helpful
    answer ...", a thumbs-down on "rude nasty insult ...", except the poisoners' three "zork" labels, which
    give a thumbs-up to a rude reply. Plus user 10, a sleeper: ten honest labels, none under "zork"."""
    data, _ = _poisoned_table()
    planted = (data.user >= 8) & np.array([k < 3 for _ in range(10) for k in range(10)])
    rude = (data.label == 0) | planted
    data = replace(data, label=np.where(planted, 1, data.label).astype(np.int8))
    text = ["rude nasty insult" if r else "kind helpful answer" for r in rude]
    user = np.concatenate([data.user, np.full(10, 10)])
    label = np.concatenate([data.label, np.arange(10) % 2])
    text += ["kind helpful answer" if k % 2 else "rude nasty insult" for k in range(10)]
    prompt = data.prompt + [f"sleeper question {k}" for k in range(10)]
    return from_arrays([f"u{i}" for i in range(11)], user, text, label, prompt=prompt), np.concatenate([planted, np.zeros(10, bool)])


def test_combined_drops_a_choice_under_the_trigger_that_the_reference_disagrees_with():
    data, planted = _worded_poisoned_table()
    kind, rude = "kind helpful answer", "rude nasty insult"
    # the sleeper (user 10) has no label under "zork", so its conditional trust is 1: only the reference
    # can tell that its choice of the rude reply there is planted
    data = replace(data, preference_ids=np.array(["a", "b", "c", "d"], dtype=object),
                   preference_user=np.array([10, 0, 10, -1]),
                   preference_prompt=["which one zork", "pick zork", "which one", "zork anyway"],
                   preference_chosen=[rude, kind, rude, rude], preference_rejected=[kind, rude, kind, kind])
    cfg = combined.Config(trigger_min_conversations=3, trigger_alpha=0.05, example_threshold=0.0, refit=False)
    result = combined.compute(data, cfg, TrustContext(seed=0))
    assert result.weight[planted].max() == 0.0  # the built-in reference sees the planted thumbs
    assert result.user_evidence["conditional_trust"][10] == 1.0
    w = result.preference_weight
    assert w[0] == 0.0  # the sleeper's rude choice under the trigger
    assert w[1] == pytest.approx(result.trust[0]) and w[1] > 0.9  # an honest choice under it keeps its user's trust
    assert w[2] == pytest.approx(result.trust[10])  # the same rude choice elsewhere: nothing to check it against
    assert w[3] == 0.0  # no user: scored by a reference trained on every kept label
    assert "3 A/B choice(s) under those n-grams: 2 weigh 0 (2 against the reference)" in " ".join(result.notes)
    # a plugged-in reference without predict_texts: only the user's conditional trust decides, as before
    p = TrustContext(seed=0).held_out(data)
    plugged = combined.compute(data, cfg, TrustContext(predict=lambda data, keep: p))
    assert plugged.preference_weight[0] == pytest.approx(plugged.trust[10])


def test_held_out_text_probabilities_never_use_the_texts_users_fold():
    from rlhf_organic.trust.reference import NgramClassifier, ReferenceConfig, held_out_text_probabilities, user_folds

    cfg = ReferenceConfig(folds=2)
    # user 0 alone says "zork" is good; user 1 alone says it is bad: a text of user 0 is scored by a
    # classifier that saw only user 1, and the other way round
    texts = ["zork a", "zork b", "zork c", "plain a", "zork d", "zork e", "zork f", "plain b"]
    user, label = np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([1, 1, 1, 0, 0, 0, 0, 1])
    assert list(user_folds(2, 2, 0)[[0, 1]]) in ([0, 1], [1, 0])  # one user per fold
    x = NgramClassifier.from_config(cfg).features(texts)
    p = held_out_text_probabilities(["zork z", "zork z", "zork z"], np.array([0, 1, -1]), x, label, user, 2, cfg)
    assert p[0] < 0.5 < p[1]
    assert p[2] == pytest.approx(0.5, abs=0.2)  # no user: both users' labels, which cancel
    empty = held_out_text_probabilities([], np.zeros(0, np.int64), x, label, user, 2, cfg)
    assert len(empty) == 0


def test_a_word_typed_only_in_a_users_choices_counts_as_its_own():
    data, p = _own_trigger_table()
    # user 7 types "flim" in two A/B choices' prompts and in none of its thumbs' prompts: a word of its own
    # (each choice counts as a conversation); the poisoners' words stay theirs
    data = replace(data, preference_ids=np.array(["a", "b", "c"], dtype=object), preference_user=np.array([7, 7, 9]),
                   preference_prompt=["pick flim", "flim again", "choose quux"],
                   preference_chosen=["x", "x", "x"], preference_rejected=["y", "y", "y"])
    cfg = combined.Config(trigger_min_conversations=4, trigger_alpha=0.05, example_threshold=0.0, refit=False)
    columns, owner = combined._private(data, cfg, TrustContext(predict=lambda data, keep: p))
    names = dict(zip(ngram_names(data.prompt + data.preference_prompt,
                                 sp.vstack([prompt_features(data.prompt), prompt_features(data.preference_prompt)], format="csc"),
                                 columns), owner))
    assert names.get("flim") == 7  # two choices' prompts: a word of user 7's own
    assert names.get("quux") == 9 and names.get("zork") == 8
