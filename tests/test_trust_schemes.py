"""Trust schemes: each scheme's arithmetic pinned on small hand-made tables, the shared Beta-binomial
pieces, the metrics, the k-fold reference, and the trust stage end to end on a tiny simulation.

Reference probabilities are fed through ``TrustContext(predict=...)`` (the documented plug-in for a
held-out model), so every expected number below is worked out by hand in a comment.
"""

import re

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from scipy.stats import beta as beta_dist

from rlhf_organic.data.ingest import ingest
from rlhf_organic.errors import UserError
from rlhf_organic.simulator.simulate import preset_config, simulate
from rlhf_organic.trust.config import TrustSection, settings_from_cli
from rlhf_organic.trust.data import from_arrays, load_feedback
from rlhf_organic.trust.metrics import precision_recall, roc_auc, trust_metrics
from rlhf_organic.trust.reference import NgramClassifier, ReferenceConfig, held_out_probabilities, user_folds
from rlhf_organic.trust.scheme import TrustContext, agreement, beta_posterior_mean, beta_prior, beta_prob_above
from rlhf_organic.trust.schemes import (
    SCHEMES,
    bayesian,
    combined,
    crowd,
    per_example,
    per_user,
    per_user_example,
    safety_filter,
    soft_purr,
    uniform,
)
from rlhf_organic.trust.stage import compute_trust, format_metrics, load_ground_truth, run_scheme, select_on_gold

from conftest import bb3x_conversation, write_lines

SMALL_REF = ReferenceConfig(n_features=1 << 14)  # smaller than the default 2**18: faster fits


def fixed(p):
    """A held-out "model" that returns the hand-chosen probabilities ``p`` whatever it trains on."""
    p = np.asarray(p, np.float64)
    return TrustContext(predict=lambda data, keep: p)


def p_for(f, label):
    """The reference P(up) that gives agreement ``f`` with ``label`` (f = p for a 1, 1 - p for a 0)."""
    f, label = np.asarray(f, np.float64), np.asarray(label)
    return np.where(label == 1, f, 1 - f)


# A: 3 labels, B: 2 labels, C: none, D: 1 label.
USERS = ["A", "B", "C", "D"]
USER = [0, 0, 0, 1, 1, 3]
LABEL = [1, 0, 1, 0, 0, 1]
P = [0.8, 0.5, 0.3, 0.9, 0.2, 0.6]
F = [0.8, 0.5, 0.3, 0.1, 0.8, 0.6]  # agreement y p + (1 - y)(1 - p) of each row above


def table(**kw):
    return from_arrays(USERS, USER, [f"reply {i}" for i in range(len(USER))], LABEL, **kw)


# ---------------------------------------------------------------- shared pieces


def test_agreement_is_p_for_a_thumbs_up_and_one_minus_p_for_a_thumbs_down():
    f = agreement(np.array([0.9, 0.9, 0.2, 0.5]), np.array([1, 0, 0, 1]))
    assert f == pytest.approx([0.9, 0.1, 0.8, 0.5])  # 0.9; 1-0.9; 1-0.2; 0.5
    assert agreement(np.array(P), np.array(LABEL)) == pytest.approx(F)


def test_context_calls_predict_once_per_training_set():
    calls = []
    ctx = TrustContext(predict=lambda data, keep: calls.append(keep.copy()) or np.full(data.n_examples, 0.5))
    data = table()
    ctx.held_out(data)
    ctx.held_out(data)
    ctx.held_out(data, keep=np.array([1, 1, 1, 0, 0, 1], bool))
    assert len(calls) == 2 and calls[0].all() and calls[1].tolist() == [True, True, True, False, False, True]


def test_beta_prior_with_fixed_strength_and_posterior_mean():
    successes, trials = np.array([6.0, 0.0]), np.array([8, 2])
    alpha, beta = beta_prior(successes, trials, strength=10)
    # pooled rate 6/10 = 0.6 -> alpha = 0.6*10, beta = 0.4*10
    assert (alpha, beta) == pytest.approx((6.0, 4.0))
    # (alpha + s) / (alpha + beta + n): (6+6)/(10+8) = 2/3, (6+0)/(10+2) = 1/2
    assert beta_posterior_mean(successes, trials, alpha, beta) == pytest.approx([2 / 3, 0.5])
    # no trials at all: the mean falls back to 0.5
    assert beta_prior(np.zeros(3), np.zeros(3), strength=4) == pytest.approx((2.0, 2.0))


def test_shrinkage_pulls_a_user_with_one_label_harder_toward_the_prior_mean():
    alpha, beta = 6.0, 4.0  # prior mean 0.6
    for rate in (0.0, 1.0):
        one = beta_posterior_mean(rate * 1, 1, alpha, beta)  # rate 1: 7/11 = 0.636; rate 0: 6/11 = 0.545
        twenty = beta_posterior_mean(rate * 20, 20, alpha, beta)  # rate 1: 26/30 = 0.867; rate 0: 6/30 = 0.2
        assert abs(one - 0.6) < abs(twenty - 0.6)
    assert beta_posterior_mean(1, 1, alpha, beta) == pytest.approx(7 / 11)
    assert beta_posterior_mean(0, 20, alpha, beta) == pytest.approx(0.2)


@pytest.mark.parametrize("s,n,level", [(0, 0, 0.5), (3, 4, 0.5), (1, 9, 0.5), (2.5, 3, 0.7), (18, 20, 0.3)])
def test_beta_prob_above_is_the_posterior_survival_function(s, n, level):
    alpha, beta = 6.0, 4.0
    expected = beta_dist.sf(level, alpha + s, beta + n - s)
    assert beta_prob_above(s, n, alpha, beta, level) == pytest.approx(expected, rel=1e-9)


def test_method_of_moments_strength_is_estimated_and_clipped_to_2_200():
    # rates .2 .8 .2 .8 over 10 trials: mean .5, var .09, binomial noise .25/10 = .025, spread .065
    # strength = .25 / .065 - 1 = 2.846 -> alpha = beta = 1.423
    alpha, beta = beta_prior(np.array([2.0, 8, 2, 8]), np.array([10, 10, 10, 10]), None)
    assert alpha == pytest.approx(0.5 * (0.25 / 0.065 - 1)) and beta == pytest.approx(alpha)
    # rates 0 and 1: var .25, spread .225 -> .25/.225 - 1 = 0.11 -> clipped up to 2
    assert sum(beta_prior(np.array([0.0, 10, 0, 10]), np.array([10] * 4), None)) == pytest.approx(2.0)
    # rates .500 and .502 over 1e6 trials: spread 7.5e-7 -> strength ~333k -> clipped down to 200
    big = np.array([1e6] * 4)
    assert sum(beta_prior(np.array([5e5, 5.02e5, 5e5, 5.02e5]), big, None)) == pytest.approx(200.0)
    # no spread beyond noise, or fewer than 3 users with 2+ trials: the default strength 10
    assert sum(beta_prior(np.array([5.0, 6, 5, 6]), np.array([10] * 4), None)) == pytest.approx(10.0)
    assert sum(beta_prior(np.array([0.0, 10, 1]), np.array([10, 10, 1]), None)) == pytest.approx(10.0)


# ---------------------------------------------------------------- simple schemes


def test_uniform_is_all_ones():
    r = uniform.compute(table(), uniform.Config(), fixed(P))
    assert r.trust.tolist() == [1.0] * 4 and r.weight.tolist() == [1.0] * 6


def test_safety_filter_user_and_conversation_level():
    data = table(
        user_counts={"n_user_messages": [10, 4, 0, 5], "n_unsafe_user_messages": [0, 1, 0, 0]},
        adversarial=[False, True, False, True, True, False],
    )
    user = safety_filter.compute(data, safety_filter.Config(level="user"), fixed(P))
    assert user.trust.tolist() == [1, 0, 1, 1]  # only B has a flagged message
    assert user.weight.tolist() == [1, 1, 1, 0, 0, 1]
    assert user.user_evidence["flagged_rate"] == pytest.approx([0, 1 / 4, 0, 0])  # C: no messages -> 0
    conv = safety_filter.compute(data, safety_filter.Config(level="conversation"), fixed(P))
    assert conv.weight.tolist() == [1, 0, 1, 0, 0, 1]  # labels in adversarial conversations dropped
    assert conv.trust == pytest.approx([2 / 3, 0, 1, 1])  # share kept; C without feedback: 1


def test_per_example_keeps_f_at_or_above_threshold():
    r = per_example.compute(table(), per_example.Config(threshold=0.5), fixed(P))
    # f = .8 .5 .3 | .1 .8 | .6 : .5 sits exactly on the threshold and is kept
    assert r.weight.tolist() == [1, 1, 0, 0, 1, 1]
    assert r.trust == pytest.approx([2 / 3, 1 / 2, 1.0, 1.0])  # share kept; C (no labels): 1
    assert r.example_evidence["agreement"] == pytest.approx(F)
    assert per_example.compute(table(), per_example.Config(threshold=0.81), fixed(P)).weight.sum() == 0


def test_per_user_drops_users_whose_disagreement_rate_is_above_threshold():
    # disagreement = share of f < .5: A 1/3 (.3), B 1/2 (.1), C 0 (none), D 0
    r = per_user.compute(table(), per_user.Config(threshold=0.5), fixed(P))
    assert r.user_evidence["disagreement_rate"] == pytest.approx([1 / 3, 1 / 2, 0, 0])
    assert r.trust.tolist() == [1, 1, 1, 1]  # B's 1/2 equals the threshold: not above, kept
    r = per_user.compute(table(), per_user.Config(threshold=0.4), fixed(P))
    assert r.trust.tolist() == [1, 0, 1, 1]
    assert r.weight.tolist() == [1, 1, 1, 0, 0, 1]


def test_per_user_example_without_refit():
    r = per_user_example.compute(
        table(), per_user_example.Config(user_threshold=0.4, example_threshold=0.5, refit=False), fixed(P)
    )
    # step 1 drops B (1/2 > .4); step 2 on A: f .8 .5 .3 -> keep, keep, drop; D: .6 keep
    assert r.weight.tolist() == [1, 1, 0, 0, 0, 1]
    assert r.trust == pytest.approx([2 / 3, 0, 1, 1])
    assert r.example_evidence["refit_p"] == pytest.approx(P)


def test_per_user_example_refit_uses_the_reference_trained_on_kept_users():
    refit = [0.9, 0.1, 0.9, 0.9, 0.2, 0.1]  # f2 for A: .9 .9 .9 (all kept), B .1 .8, D .1
    seen = []

    def predict(data, keep):
        seen.append(keep.copy())
        return np.array(P if keep.all() else refit)

    ctx = TrustContext(predict=predict)
    cfg = per_user_example.Config(user_threshold=0.4, example_threshold=0.5, rounds=1)
    r = per_user_example.compute(table(), cfg, ctx)
    assert [k.tolist() for k in seen] == [[True] * 6, [True, True, True, False, False, True]]
    assert r.example_evidence["refit_p"] == pytest.approx(refit)
    assert r.example_evidence["reference_p"] == pytest.approx(P)
    # B stays dropped even though its second label agrees with the refit (.8); D's .1 is now dropped
    assert r.weight.tolist() == [1, 1, 1, 0, 0, 0]
    assert r.trust == pytest.approx([1, 0, 1, 0])


def test_per_user_example_rounds_judge_users_again_against_the_refitted_reference():
    refit = [0.9, 0.1, 0.9, 0.9, 0.2, 0.1]
    seen = []

    def predict(data, keep):
        seen.append(keep.tolist())
        return np.array(P if keep.all() else refit)

    cfg = per_user_example.Config(user_threshold=0.4, example_threshold=0.5, rounds=3)
    r = per_user_example.compute(table(), cfg, TrustContext(predict=predict))
    # round 1 (P): B disagrees on 1 of 2 = .5 > .4, dropped; D (f .6) kept.
    # round 2 (refit): D's only label has f = .1 -> disagreement 1 -> dropped; A, C kept.
    # round 3 (refit on A alone): same numbers, same users: converged (no fourth fit).
    assert seen == [[True] * 6, [True, True, True, False, False, True], [True, True, True, False, False, False]]
    assert r.weight.tolist() == [1, 1, 1, 0, 0, 0]
    assert r.trust == pytest.approx([1, 0, 1, 0])


def test_soft_purr_mixes_a_label_with_its_users_other_labels():
    r = soft_purr.compute(table(), soft_purr.Config(alpha=0.5, threshold=0.5), fixed(P))
    expected = [
        0.5 * 0.8 + 0.5 * (0.5 + 0.3) / 2,  # A: .6
        0.5 * 0.5 + 0.5 * (0.8 + 0.3) / 2,  # A: .525
        0.5 * 0.3 + 0.5 * (0.8 + 0.5) / 2,  # A: .475
        0.5 * 0.1 + 0.5 * 0.8,  # B: .45
        0.5 * 0.8 + 0.5 * 0.1,  # B: .45
        0.6,  # D's only label: judged by f alone
    ]
    assert r.example_evidence["purr_score"] == pytest.approx(expected)
    assert r.weight.tolist() == [1, 1, 0, 0, 0, 1]
    assert r.trust == pytest.approx([2 / 3, 0, 1, 1])  # C without labels: 1


def test_soft_purr_with_alpha_1_is_per_example():
    r = soft_purr.compute(table(), soft_purr.Config(alpha=1.0, threshold=0.5), fixed(P))
    assert r.example_evidence["purr_score"] == pytest.approx(F)
    assert r.weight.tolist() == [1, 1, 0, 0, 1, 1]
    assert r.trust == pytest.approx([2 / 3, 1 / 2, 1, 1])


# ---------------------------------------------------------------- bayesian


def test_bayesian_soft_posterior_mean_and_prior_for_a_user_without_feedback():
    r = bayesian.compute(table(), bayesian.Config(prior_strength=10), fixed(P))
    # successes (sum of f): A 1.6, B 0.9, C 0, D 0.6; pooled 3.1 / 6 -> alpha = 31/6, beta = 29/6
    alpha, _beta = 3.1 / 6 * 10, (1 - 3.1 / 6) * 10
    expected = [(alpha + 1.6) / (10 + 3), (alpha + 0.9) / (10 + 2), alpha / 10, (alpha + 0.6) / (10 + 1)]
    assert r.trust == pytest.approx(expected)
    assert r.trust[2] == pytest.approx(3.1 / 6)  # no feedback: the prior mean
    assert r.weight == pytest.approx(np.array(expected)[USER])
    assert r.user_evidence["agreements"] == pytest.approx([1.6, 0.9, 0, 0.6])


def test_bayesian_hard_agreement_and_reliable_output():
    cfg = bayesian.Config(prior_strength=10, agreement="hard", output="reliable")
    r = bayesian.compute(table(), cfg, fixed(P))
    # successes f >= .5: A 2 (.8 .5), B 1, C 0, D 1 -> pooled 4/6 -> alpha 20/3, beta 10/3
    alpha, beta = 20 / 3, 10 / 3
    s, n = np.array([2, 1, 0, 1]), np.array([3, 2, 0, 1])
    assert r.trust == pytest.approx(beta_dist.sf(0.5, alpha + s, beta + n - s), rel=1e-9)


# ---------------------------------------------------------------- crowd


def test_crowd_multi_rater_contradicting_user_gets_lower_trust():
    # three users judge the same four replies; two agree on the truth, "contra" always says the opposite
    truth = [1, 0, 1, 0]
    user = [u for u in range(3) for _ in truth]
    text = [f"Reply  {i}" if u == 0 else f"reply {i}" for u in range(3) for i in range(4)]
    label = [y if u < 2 else 1 - y for u in range(3) for y in truth]
    data = from_arrays(["h1", "h2", "contra", "silent"], user, text, label)
    assert crowd.item_index(data, "response").tolist() == [0, 1, 2, 3] * 3  # case and spacing normalised
    r = crowd.compute(data, crowd.Config(reference_as_rater=False), fixed(np.full(12, 0.5)))
    assert r.trust[0] == pytest.approx(r.trust[1]) and r.trust[0] > 0.5
    assert r.trust[2] == 0.0  # accuracy below a coin flip: max(0, 2a - 1) = 0
    assert r.trust[3] == 1.0  # no labels: no_evidence_trust
    assert "100.0% of labels are on items judged by more than one user" in r.notes


def _single_raters():
    # honest and contrarian each label six different replies once; the reference is confident and right
    good = np.arange(12) % 2 == 0
    p = np.where(good, 0.99, 0.01)
    label = good.astype(int)
    label[6:] = 1 - label[6:]
    return from_arrays(["honest", "contrarian", "silent"], [0] * 6 + [1] * 6, [f"t{i}" for i in range(12)], label), p


def test_crowd_single_raters_without_reference_get_no_evidence_trust_and_a_note():
    data, p = _single_raters()
    r = crowd.compute(data, crowd.Config(reference_as_rater=False, no_evidence_trust=0.7), fixed(p))
    assert r.trust == pytest.approx([0.7, 0.7, 0.7])
    assert any("no_evidence_trust=0.7" in n for n in r.notes)
    assert np.isnan(r.user_evidence["accuracy"]).all()


def test_crowd_reference_as_rater_scores_single_raters_against_the_reference():
    data, p = _single_raters()
    r = crowd.compute(data, crowd.Config(), fixed(p))
    # Lone labels are judged by the reference alone; the class prior is .5 by symmetry, so the other
    # raters' P(good) is exactly .99 / .01. Accuracy with the Beta(1.4, .6) prior:
    # honest (6 * .99 + 1.4) / (6 + 2) = .9175 -> trust 2a - 1 = .835; contrarian (6 * .01 + 1.4) / 8 -> 0
    assert r.user_evidence["accuracy"][:2] == pytest.approx([0.9175, 0.1825], abs=1e-6)
    assert r.trust == pytest.approx([0.835, 0.0, 1.0], abs=1e-6)
    assert any("reference rater" in n for n in r.notes)


# ---------------------------------------------------------------- combined


def test_behaviour_trust_shrinks_the_flag_rate_and_ramps_linearly():
    cfg = combined.Config(flag_bad=0.3)  # k = 10 pseudo-messages at .03; ok .1, bad .3
    rate, trust = combined.behaviour_trust([0, 2, 5, 20, 0], [10, 10, 10, 20, 0], cfg)
    # (0 + .3)/20 = .015; (2 + .3)/20 = .115; (5 + .3)/20 = .265; (20 + .3)/30 = .677; (0 + .3)/10 = .03
    assert rate == pytest.approx([0.015, 0.115, 0.265, 20.3 / 30, 0.03])
    # 1 - clip((rate - .1) / .2): 1; 1 - .075; 1 - .825; 0; 1
    assert trust == pytest.approx([1.0, 0.925, 0.175, 0.0, 1.0])


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_behaviour_trust_without_prior_or_messages_is_the_prior_rate_without_warnings():
    no_prior = combined.Config(flag_prior_strength=0, flag_bad=0.3)
    rate, trust = combined.behaviour_trust([0, 1], [0, 4], no_prior)
    # no messages and no pseudo-messages: the prior rate .03 (-> trust 1); 1/4 = .25 -> 1 - (.25 - .1)/.2
    assert rate == pytest.approx([0.03, 0.25]) and trust == pytest.approx([1.0, 0.25])


def test_combined_flag_ramp_must_be_ordered():
    with pytest.raises(ValueError, match="flag_bad"):
        combined.Config(flag_ok=0.3, flag_bad=0.2)


def test_combined_catches_the_gaslight_user_and_weights_by_refitted_agreement():
    # helper H and gaslighter G label in full agreement with the reference; troll T against it.
    # G's own messages are mostly flagged unsafe (8 of 10); H's and T's never.
    user = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    label = [1, 0, 1, 0] * 3
    f = [0.9] * 8 + [0.1] * 4
    p = p_for(f, label)
    refit = p_for([0.9, 0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1], label)
    data = from_arrays(["H", "G", "T"], user, [f"r{i}" for i in range(12)], label,
                       user_counts={"n_user_messages": [10, 10, 10], "n_unsafe_user_messages": [0, 8, 0]})
    seen = []

    def predict(d, keep):
        seen.append(keep.copy())
        return p if keep.all() else refit

    cfg = combined.Config(prior_strength=10, example_threshold=0.5, agreement="soft", rounds=1)
    r = combined.compute(data, cfg, TrustContext(predict=predict))
    # agreement: successes 3.6, 3.6, .4 of 4 each; pooled 7.6/12 -> alpha = 7.6/12*10, beta = 4.4/12*10
    alpha, beta = 7.6 / 12 * 10, 4.4 / 12 * 10
    agree = beta_dist.sf(0.5, alpha + np.array([3.6, 3.6, 0.4]), beta + 4 - np.array([3.6, 3.6, 0.4]))
    # behaviour: G's shrunk rate (8 + .3)/20 = .415 >= .3 -> 0; H, T .015 -> 1
    assert r.user_evidence["behaviour_trust"] == pytest.approx([1, 0, 1])
    assert r.trust == pytest.approx(agree * np.array([1, 0, 1]))
    assert r.trust[0] > 0.5 > r.trust[2] and r.trust[1] == 0.0  # gaslighter: perfect agreement, no trust
    # refit on users with trust >= cut (only H); a label keeps its user's trust when f2 >= .5
    assert seen[1].tolist() == [True] * 4 + [False] * 8
    assert r.example_evidence["refit_p"] == pytest.approx(refit)
    assert r.weight == pytest.approx(r.trust[user] * np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0]))


def test_combined_behaviour_weight_zero_ignores_flags():
    data = from_arrays(["G", "H"], [0, 0, 1, 1], ["a", "b", "c", "d"], [1, 0, 1, 0],
                       user_counts={"n_user_messages": [10, 10], "n_unsafe_user_messages": [10, 0]})
    p = p_for([0.9] * 4, [1, 0, 1, 0])
    r = combined.compute(data, combined.Config(prior_strength=10, behaviour_weight=0.0, refit=False), fixed(p))
    assert r.trust[0] == pytest.approx(r.trust[1]) and r.trust[0] > 0.5


# ---------------------------------------------------------------- metrics


def test_roc_auc_counts_ties_as_half_and_is_none_for_one_class():
    # positives score .4 and .8, negatives .1 and .4: pairs 1 + .5 (tie) + 1 + 1 = 3.5 of 4
    assert roc_auc([0.1, 0.4, 0.4, 0.8], [False, True, False, True]) == pytest.approx(0.875)
    assert roc_auc([0.3, 0.3], [True, False]) == pytest.approx(0.5)
    assert roc_auc([0.1, 0.2], [True, True]) is None
    assert roc_auc([0.1, 0.2], [False, False]) is None


def test_precision_recall_and_undefined_cases():
    assert precision_recall([True, True, False, False], [True, False, True, False]) == (0.5, 0.5)
    assert precision_recall([False, False], [True, False]) == (None, 0.0)
    assert precision_recall([True, False], [False, False]) == (0.0, None)


def test_trust_metrics_on_a_hand_example():
    m = trust_metrics(
        [1.0, 0.2, 0.9, 0.5], [1.0, 0.5, 0.0, 1.0], n_feedback=[2, 1, 1, 0], cut=0.5,
        user_is_troll=[0, 1, np.nan, 1],  # third user not covered; fourth has no feedback
        example_user_is_troll=[0, 0, 1, np.nan],
        example_corrupted=[0, np.nan, 1, 0],
    )
    assert (m["users"], m["users_with_feedback"], m["examples"]) == (4, 3, 4)
    assert m["mean_trust"] == pytest.approx((1.0 + 0.2 + 0.9) / 3)
    assert m["distrusted_users"] == 1 and m["weight_kept"] == pytest.approx(2.5 / 4)
    assert m["user"] == {"auc": 1.0, "precision": 1.0, "recall": 1.0, "n": 2, "n_bad": 1}
    assert m["helper_weight_kept"] == pytest.approx(0.75)  # mean of 1 and .5
    assert m["troll_weight_kept"] == 0.0
    assert m["example"]["auc"] == 1.0 and m["example"]["n"] == 3
    assert "poisoned_weight_kept" not in m
    planted = trust_metrics([1.0], [1.0, 0.5, 0.0, 1.0], [4], 0.5, example_poisoned=[1, 1, 0, np.nan])
    assert planted["poisoned_weight_kept"] == pytest.approx(0.75)  # the planted labels' weights 1 and 0.5
    assert trust_metrics([1.0], [1.0], [1], 0.5, example_poisoned=[0])["poisoned_weight_kept"] is None


def test_trust_metrics_with_users_of_one_kind_gives_none_not_nan():
    m = trust_metrics([0.9, 0.4], [1.0, 1.0], [1, 1], 0.5, user_is_troll=[0, 0], example_user_is_troll=[0, 0])
    assert m["user"]["auc"] is None and m["user"]["recall"] is None and m["troll_weight_kept"] is None
    assert m["user"]["precision"] == 0.0  # one helper distrusted, no troll among the distrusted
    m = trust_metrics([], [], [], 0.5)
    assert m["mean_trust"] is None and m["weight_kept"] is None


# ---------------------------------------------------------------- every scheme through run_scheme


@pytest.mark.parametrize("name", list(SCHEMES))
def test_every_scheme_gives_finite_trust_and_weight_in_unit_interval(name):
    data = table(user_counts={"n_user_messages": [10, 4, 0, 5], "n_unsafe_user_messages": [0, 3, 0, 0]},
                 adversarial=[False, True, False, True, True, False])
    logs = []
    result, cfg = run_scheme(data, TrustSection(scheme=name), fixed(P), log=logs.append)
    for values, n in ((result.trust, 4), (result.weight, 6)):
        values = np.asarray(values, np.float64)
        assert values.shape == (n,) and np.isfinite(values).all()
        assert values.min() >= 0 and values.max() <= 1
    assert cfg == TrustSection(scheme=name).scheme_config().model_dump()
    documented = {"uniform": 1.0, "safety_filter": 1.0, "per_example": 1.0, "per_user": 1.0,
                  "per_user_example": 1.0, "soft_purr": 1.0, "crowd": 1.0,  # crowd: no_evidence_trust
                  "bayesian": sum(F) / len(F),  # the prior mean = the pooled agreement
                  # combined: the prior's P(agreement > .5) with strength 10 (fewer than 3 users with 2+
                  # labels); hard agreement: 4 of the 6 labels have f >= .5; times behaviour trust 1
                  # (no messages: the .03 prior rate is under flag_ok)
                  "combined": beta_dist.sf(0.5, 4 / 6 * 10, 2 / 6 * 10)}
    assert result.trust[2] == pytest.approx(documented[name])  # C has no feedback


def test_every_scheme_on_data_without_feedback_gives_empty_weights_or_a_clear_error():
    data = from_arrays(["a", "b"], [], [], [])
    for name in SCHEMES:
        settings = TrustSection(scheme=name, reference=ReferenceConfig(n_features=1 << 12))
        try:
            result, _ = run_scheme(data, settings, TrustContext(settings.reference), log=lambda s: None)
        except UserError as e:
            assert "thumbs" in str(e) or "feedback" in str(e)
        else:
            assert result.weight.shape == (0,) and np.isfinite(result.trust).all()


def test_an_invalid_trust_or_weight_array_is_caught():
    from rlhf_organic.trust.scheme import TrustResult
    from rlhf_organic.trust.stage import _check

    with pytest.raises(RuntimeError, match="invalid trust"):
        _check(TrustResult(np.array([1.0, np.nan, 0, 0]), np.ones(6)), table(), "x")
    with pytest.raises(RuntimeError, match="invalid weight"):
        _check(TrustResult(np.ones(4), np.full(6, 1.5)), table(), "x")
    with pytest.raises(RuntimeError, match="invalid weight"):
        _check(TrustResult(np.ones(4), np.ones(5)), table(), "x")


# ---------------------------------------------------------------- the k-fold reference


def _text_data(n_users=10, per_user=6, seed=0):
    rng = np.random.default_rng(seed)
    good = ["great answer, thanks", "great helpful answer", "really great and helpful"]
    bad = ["awful rude reply", "rude and awful", "an awful reply"]
    user = [u for u in range(n_users) for _ in range(per_user)]
    label = [i % 2 for _ in range(n_users) for i in range(per_user)]
    text = [(good if y else bad)[rng.integers(3)] + f" {rng.integers(1000)}" for y in label]
    return [f"u{u}" for u in range(n_users)], user, text, label


def test_user_folds_are_balanced_and_seeded():
    folds = user_folds(11, 5, seed=3)
    assert sorted(np.bincount(folds).tolist()) == [2, 2, 2, 2, 3]
    assert folds.tolist() == user_folds(11, 5, seed=3).tolist()
    assert folds.tolist() != user_folds(11, 5, seed=4).tolist()


def test_k_fold_reference_separates_classes_and_ignores_a_users_own_labels():
    users, user, text, label = _text_data()
    cfg = ReferenceConfig(folds=5, n_features=1 << 12)
    p = held_out_probabilities(text, np.array(label), np.array(user), len(users), cfg, seed=0)
    y = np.array(label) == 1
    assert p[y].min() > p[~y].max()
    flipped = np.array(label)
    mine = np.array(user) == 0
    flipped[mine] = 1 - flipped[mine]
    p2 = held_out_probabilities(text, flipped, np.array(user), len(users), cfg, seed=0)
    assert np.array_equal(p2[mine], p[mine])  # folds are by user: user 0's labels never train its own fold
    assert not np.allclose(p2[~mine], p[~mine])  # ...but they do train the others'
    # the same through the default TrustContext
    ctx = TrustContext(reference=cfg, seed=0)
    assert np.array_equal(ctx.held_out(from_arrays(users, user, text, label)), p)


def test_ngram_classifier_with_one_class_predicts_its_weighted_rate():
    clf = NgramClassifier(n_features=1 << 10).fit(["a", "b", "c"], np.array([1, 1, 0]), np.array([1.0, 1.0, 0.0]))
    assert clf.predict_proba(["zzz", "a"]).tolist() == [1.0, 1.0]
    clf.fit(["a", "b"], np.array([1, 0]), np.zeros(2))
    assert clf.predict_proba(["a"]).tolist() == [0.5]


# ---------------------------------------------------------------- select_on_gold


def _gold_case(n_gold):
    """Two honest users and three trolls (inverted labels) over "great"/"awful" replies. The reference
    agrees .95 with honest labels and .65 with troll labels, so only per_example's threshold .7 drops the
    trolls; with them the downstream classifier learns the replies backwards."""
    rows = [(u, i % 2 == 0, u >= 2) for u in range(5) for i in range(10)]  # (user, good reply, troll)
    user = [u for u, _, _ in rows]
    text = [("great helpful answer" if good else "awful rude reply") + f" x{j}" for j, (_, good, _) in enumerate(rows)]
    label = [int(good != troll) for _, good, troll in rows]
    f = [0.65 if troll else 0.95 for _, _, troll in rows]
    gold_text = ([f"great helpful answer g{i}" for i in range(n_gold)]
                 + [f"awful rude reply g{i}" for i in range(n_gold)])
    data = from_arrays([f"u{u}" for u in range(5)], user, text, label,
                       gold_text=gold_text, gold_label=[1] * n_gold + [0] * n_gold)
    ctx = TrustContext(reference=ReferenceConfig(n_features=1 << 12), predict=lambda d, k: p_for(f, label))
    return data, ctx


def test_select_on_gold_picks_the_best_clean_accuracy():
    data, ctx = _gold_case(10)
    logs = []
    cfg = select_on_gold(data, per_example, per_example.Config(threshold=0.5), per_example.TUNE, ctx, logs.append)
    assert cfg.threshold == 0.7
    assert "threshold=0.7" in logs[-1] and "0.7: 1.000" in logs[-1]
    settings = TrustSection(scheme="per_example", select_on_gold=True, reference=ReferenceConfig(n_features=1 << 12))
    result, used = run_scheme(data, settings, ctx, log=logs.append)
    assert used["threshold"] == 0.7 and result.weight.tolist() == [1.0] * 20 + [0.0] * 30


def test_select_on_gold_keeps_the_configured_value_with_too_few_gold_labels():
    data, ctx = _gold_case(5)
    logs = []
    cfg = select_on_gold(data, per_example, per_example.Config(threshold=0.5), per_example.TUNE, ctx, logs.append)
    assert cfg.threshold == 0.5
    assert logs == ["[trust] select_on_gold: only 5 good / 5 bad clean labels (need 10 of each); keeping threshold=0.5"]


# ---------------------------------------------------------------- settings


def test_settings_from_cli_routes_bare_keys_to_the_scheme():
    s = settings_from_cli("per_user", ["threshold=0.4", "reference.folds=3"])
    assert s.scheme == "per_user" and s.per_user.threshold == 0.4 and s.reference.folds == 3
    assert s.scheme_config() is s.per_user
    with pytest.raises(UserError):
        settings_from_cli("combined", ["flag_ok=0.5", "flag_bad=0.2"])


# ---------------------------------------------------------------- the trust stage end to end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust_stage")
    simulate(preset_config("tiny", users=40, seed=0), root / "sim", progress=False)
    summary = ingest([str(root / "sim" / "logs")], root / "ds", progress=False, log=lambda s: None)
    return root, summary


def test_compute_trust_writes_the_trust_folder(tiny):
    root, summary = tiny
    out, logs = root / "trust_combined", []
    settings = TrustSection(scheme="combined", reference=SMALL_REF, select_on_gold=False)
    metrics = compute_trust(root / "ds", out, settings, ground_truth=root / "sim" / "ground_truth.parquet",
                            progress=False, log=logs.append)
    users = pq.read_table(out / "users.parquet")
    examples = pq.read_table(out / "examples.parquet")
    assert {"user_id", "trust", "n_feedback"} <= set(users.column_names)
    assert {"example_id", "user_id", "weight"} <= set(examples.column_names)
    assert users.num_rows == summary["users"]
    assert examples.num_rows == summary["thumbs_up"] + summary["thumbs_down"]
    for values in (users.column("trust").to_numpy(), examples.column("weight").to_numpy()):
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    saved = orjson.loads((out / "metrics.json").read_bytes())
    assert saved["scheme"] == "combined" and saved["config"]["example_threshold"] == 0.5
    assert 0.5 < saved["user"]["auc"] <= 1.0 and saved["user"]["auc"] == metrics["user"]["auc"]
    assert saved["example"]["n"] == examples.num_rows  # ground_truth_examples.parquet beside it was read
    assert set(saved["mean_trust_by_type"]) <= {"helper", "troll", "master_troll", "lazy_troll", "safe_troll",
                                                "unsafe_troll", "gaslight_troll"}
    assert (out / "trust.png").stat().st_size > 0
    assert not list(root.glob(".trust_combined.partial-*"))
    prefs = pq.read_table(out / "preferences.parquet").to_pylist()  # a preference weighs its user's trust
    trust_of = dict(zip(users.column("user_id").to_pylist(), users.column("trust").to_pylist()))
    assert len(prefs) == summary["preferences"] > 0
    assert all(p["weight"] == pytest.approx(trust_of[p["user_id"]] if p["user_id"] else 1.0) for p in prefs)
    assert "troll AUC" in format_metrics(metrics)
    assert logs[0].startswith("[trust] combined: ")
    data = load_feedback(root / "ds")
    assert data.n_examples == examples.num_rows and data.n_users == users.num_rows


def test_compute_trust_refuses_an_existing_folder_without_overwrite(tiny):
    root, _ = tiny
    out = root / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    settings = TrustSection(scheme="uniform", reference=SMALL_REF)
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        compute_trust(root / "ds", out, settings, progress=False, log=lambda s: None)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(UserError, match="not written by rlhf-organic"):  # a folder of the user's: never replaced
        compute_trust(root / "ds", out, settings, overwrite=True, progress=False, log=lambda s: None)
    assert (out / "keep.txt").read_text() == "mine"
    ours = root / "ours"
    compute_trust(root / "ds", ours, settings, progress=False, log=lambda s: None)
    (ours / "extra.txt").write_text("left by a run")
    compute_trust(root / "ds", ours, settings, overwrite=True, progress=False, log=lambda s: None)
    assert not (ours / "extra.txt").exists() and (ours / "users.parquet").is_file()


def test_compute_trust_on_a_dataset_without_thumbs_is_a_clear_error(tmp_path):
    conv = bb3x_conversation()
    for message in conv["message_history"]:
        if "isLiked" in message:
            message["isLiked"] = message["isDisliked"] = False
    write_lines(tmp_path / "logs" / "a.jsonl", [conv])
    ingest([str(tmp_path / "logs")], tmp_path / "ds", progress=False, log=lambda s: None)
    with pytest.raises(UserError, match="no thumbs up/down"):
        compute_trust(tmp_path / "ds", tmp_path / "out", TrustSection(), progress=False, log=lambda s: None)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="not an ingested dataset"):
        compute_trust(tmp_path / "logs", tmp_path / "out", TrustSection(), progress=False, log=lambda s: None)


def test_compute_trust_with_one_user_says_the_agreement_evidence_is_empty(tmp_path):
    write_lines(tmp_path / "logs" / "a.jsonl", [bb3x_conversation("c1"), bb3x_conversation("c2")])
    ingest([str(tmp_path / "logs")], tmp_path / "ds", progress=False, log=lambda s: None)
    logs = []
    metrics = compute_trust(tmp_path / "ds", tmp_path / "out", TrustSection(scheme="per_example", reference=SMALL_REF),
                            progress=False, log=logs.append)
    assert metrics["users_with_feedback"] == 1
    said = " ".join(metrics["notes"] + logs)
    assert re.search(r"\b(only 1|one|single) user", said), said


def test_compute_trust_with_ground_truth_of_one_kind_gives_null_auc(tiny, tmp_path):
    root, _ = tiny
    truth = pq.read_table(root / "sim" / "ground_truth.parquet").to_pandas()
    truth["is_troll"] = False
    truth["user_type"] = "helper"
    truth.to_parquet(tmp_path / "all_helpers.parquet")
    metrics = compute_trust(root / "ds", tmp_path / "out", TrustSection(scheme="uniform", reference=SMALL_REF),
                            ground_truth=tmp_path / "all_helpers.parquet", progress=False, log=lambda s: None)
    assert metrics["user"]["auc"] is None and metrics["user"]["precision"] is None
    assert metrics["mean_trust_by_type"] == {"helper": 1.0}
    assert "troll AUC" in format_metrics(metrics) and "nan" not in format_metrics(metrics)
    assert any("one kind" in n for n in metrics["notes"])


def test_compute_trust_with_every_label_a_thumbs_up_says_so(tmp_path):
    convs = [bb3x_conversation(f"c{i}", user=f"u{i}") for i in range(3)]
    for conv in convs:
        for message in conv["message_history"]:
            if "isLiked" in message:
                message["isLiked"], message["isDisliked"] = True, False
    write_lines(tmp_path / "logs" / "a.jsonl", convs)
    ingest([str(tmp_path / "logs")], tmp_path / "ds", progress=False, log=lambda s: None)
    metrics = compute_trust(tmp_path / "ds", tmp_path / "out", TrustSection(scheme="per_user", reference=SMALL_REF),
                            progress=False, log=lambda s: None)
    assert metrics["mean_trust"] == 1.0  # the reference predicts "up" everywhere: every label agrees
    assert any(re.search(r"every label|one class|all labels", n) for n in metrics["notes"]), metrics["notes"]


def test_load_ground_truth_aligns_users_and_rejects_bad_files(tiny, tmp_path):
    root, _ = tiny
    data = load_feedback(root / "ds")
    truth = load_ground_truth(root / "sim", data)  # a simulation folder works as well as the file
    assert truth["is_troll"].shape == (data.n_users,) and set(np.unique(truth["is_troll"])) == {0.0, 1.0}
    assert truth["corrupted"].shape == (data.n_examples,)
    pq.write_table(pq.read_table(root / "sim" / "ground_truth.parquet").slice(0, 5), tmp_path / "five.parquet")
    partial = load_ground_truth(tmp_path / "five.parquet", data)
    assert np.isnan(partial["is_troll"]).sum() == data.n_users - 5  # users it does not cover: NaN
    assert (partial["user_type"] == "unknown").sum() == data.n_users - 5
    with pytest.raises(UserError, match="not found"):
        load_ground_truth(tmp_path / "missing.parquet", data)
    pq.write_table(pq.read_table(tmp_path / "five.parquet").drop(["is_troll"]), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="is_troll"):
        load_ground_truth(tmp_path / "bad.parquet", data)
