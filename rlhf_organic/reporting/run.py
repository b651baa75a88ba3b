"""The report of one run: ``report.md`` and ``report.html`` in the run folder, plots in ``report/``.

Built only from the run folder (each stage's completion marker, metrics, history and samples), so it
can be rebuilt at any time and reads the same for a computed or a reused stage.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.privacy import HIDDEN_TEXT, show_user_text
from ..data.reasons import public_reasons
from .doc import Doc
from .plots import plot_before_after, plot_loss_curves

STAGE_TITLES = {"simulate": "simulate organic logs", "ingest": "ingest", "trust": "per-user trust",
                "reward": "reward model", "judge": "clean judge", "base": "tiny policy base (imitation)",
                "policy": "policy"}


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _num(value: float | None, spec: str = ".3f") -> str:
    """A number for the text, or a dash when there is none (no users with labels, no ground truth)."""
    return "–" if value is None else format(value, spec)


def _change(before: float | None, after: float | None) -> str:
    return "–" if before is None or after is None else f"{after - before:+.3f}"


def headline(markers: dict) -> list[str]:
    """One-line findings a reader wants first."""
    lines = []
    trust = markers.get("trust", {}).get("metrics", {})
    if trust.get("user", {}).get("auc") is not None:
        u = trust["user"]
        lines.append(f"**Trust** ({trust['scheme']}) tells trolls from helpers with AUC {u['auc']:.3f}; "
                     f"trolls keep {trust['troll_weight_kept']:.1%} of their label weight, helpers {trust['helper_weight_kept']:.1%}.")
    elif trust.get("mean_trust") is not None:
        lines.append(f"**Trust** ({trust['scheme']}): mean trust {trust['mean_trust']:.3f}, "
                     f"{trust['distrusted_users']} users distrusted"
                     + (f", {trust['weight_kept']:.1%} of label weight kept." if trust.get("weight_kept") is not None else "."))
    elif trust:  # no user has labels (TRL data without user ids, under uniform)
        lines.append(f"**Trust** ({trust['scheme']}): every label weighted 1.")
    reward = markers.get("reward", {}).get("metrics", {}).get("eval", {})
    clean = reward.get("clean_pointwise", {}).get("auc")
    held = reward.get("pointwise", {}).get("auc")
    if clean is not None:
        lines.append(f"**Reward model**: clean-label AUC {clean:.3f} (held-out organic thumbs: {held:.3f}).")
    elif held is not None:
        lines.append(f"**Reward model**: held-out thumbs AUC {held:.3f}.")
    policy = markers.get("policy", {}).get("metrics", {})
    judge = policy.get("eval", {}).get("judge")
    if judge:
        lines.append(f"**Policy** ({policy['method']}, {'trust-weighted' if policy['weighted'] else 'uniform weights'}): "
                     f"the clean judge's p(good) goes {judge['base_good']:.3f} -> {judge['tuned_good']:.3f} "
                     f"({judge['tuned_good'] - judge['base_good']:+.3f}); unsafe replies {judge['base_unsafe_rate']:.3f} -> "
                     f"{judge['tuned_unsafe_rate']:.3f}; tuned beats base on {judge['win_rate']:.0%} of contexts.")
    elif policy.get("eval", {}).get("reward"):
        r = policy["eval"]["reward"]
        lines.append(f"**Policy** ({policy['method']}): reward model score {r['base']:.3f} -> {r['tuned']:.3f}.")
    return lines


def build_run_report(out: Path, recipe, markers: dict, total_seconds: float) -> Doc:
    from ..recipe import dump_recipe

    doc = Doc(f"rlhf_organic run: {recipe.name}")
    reused = [n for n, m in markers.items() if m.get("reused")]
    doc.text(f"Run folder `{out}` · seed {recipe.seed} · {len(markers)} stages in {_fmt_seconds(total_seconds)}"
             + (f" ({', '.join(reused)} reused)" if reused else ""))
    doc.bullets(headline(markers))
    shown = show_user_text(recipe)

    doc.heading("Pipeline")
    doc.table(["stage", "status", "time", "peak memory", "output"], [
        [STAGE_TITLES.get(name, name), "reused" if m.get("reused") else "computed", _fmt_seconds(m["seconds"]),
         f"{m['peak_rss_mb']} MB" + (f" (GPU {m['peak_gpu_mb']} MB)" if "peak_gpu_mb" in m else ""),
         f"`{_folder_of(out, name)}/`"]
        for name, m in markers.items()
    ])
    if "ingest" in markers:
        _data_section(doc, _ingest_view(out, markers["ingest"]["metrics"], shown))
    if "trust" in markers:
        _trust_section(doc, out, markers["trust"]["metrics"])
    plots = out / "report"
    plots.mkdir(exist_ok=True)
    if "reward" in markers:
        _reward_section(doc, out, plots, markers["reward"]["metrics"])
    if "policy" in markers:
        _policy_section(doc, out, plots, markers["policy"]["metrics"], recipe.output.samples_in_report, shown)
    doc.heading("Recipe")
    doc.text("Run it again with `rlhf-organic run " + str(out / "recipe.yaml") + "` (add `--resume` to reuse completed stages).")
    doc.code(dump_recipe(recipe), summary="the resolved recipe (every default filled in)")
    return doc


def write_run_report(out: Path, recipe, markers: dict, total_seconds: float) -> tuple[Path, Path]:
    doc = build_run_report(out, recipe, markers, total_seconds)
    paths = doc.write(out, "report")
    if "policy" in markers:
        _extend_model_card(out / "policy", recipe, markers)
        _rewrite_samples(out / "policy", recipe)
    return paths


def _ingest_view(out: Path, report: dict, shown: bool) -> dict:
    """The ingest metrics as the report may print them. The stage's marker keeps only the formats'
    dislike-reason labels (free text counted together); with user text shown, the reasons as written
    are read back from the dataset (``dataset/``, perhaps a reused stage's)."""
    dataset = out / "dataset"
    if shown and (dataset / "summary.json").is_file():
        from ..data.inspect import inspect_dataset

        return {**report, "dislike_reasons": inspect_dataset(dataset, show_user_text=True)["dislike_reasons"]}
    return _public_view(report)


def _public_view(report: dict) -> dict:
    """``report`` with free-text dislike reasons counted together (a marker written before the stage
    did this itself may still hold them)."""
    return {**report, "dislike_reasons": public_reasons(report.get("dislike_reasons") or {})}


def _rewrite_samples(folder: Path, recipe) -> None:
    """``policy/samples.md`` as ``output.show_user_text`` says (the stage writes it with user text hidden)."""
    samples = folder / "samples.parquet"
    if folder.is_symlink() or not samples.is_file() or recipe.policy is None:
        return  # a stage reused from a sibling run keeps its own
    import pandas as pd

    from ..evaluation.policy import samples_markdown

    text = samples_markdown(pd.read_parquet(samples), recipe.policy.eval.samples_shown, show_user_text=show_user_text(recipe))
    (folder / "samples.md").write_text(text, encoding="utf-8")


def _folder_of(out: Path, stage: str) -> str:
    return {"simulate": "simulation", "ingest": "dataset"}.get(stage, stage)


def _data_section(doc: Doc, report: dict) -> None:
    c = report["counts"]
    doc.heading("Data")
    doc.table(["conversations", "messages", "examples", "thumbs up", "thumbs down", "A/B choices", "users", "rejected lines"],
              [[c["conversations"], c["messages"], c["examples"], c["thumbs_up"], c["thumbs_down"], c["preferences"],
                c["users"], c["rejected"]]])
    rates = report["feedback_rates"]
    doc.text(f"{rates['examples_with_thumbs']:.1%} of bot replies have a thumb; "
             f"{report['conversations_with_unsafe_user_turns']:.1%} of conversations have unsafe user turns; "
             f"median feedback per user {report['median_feedback_per_user']:g}.")
    if report["dislike_reasons"]:
        doc.table(["dislike reason", "thumbs down"], [[k, v] for k, v in report["dislike_reasons"].items()])
    if report.get("reject_reasons"):
        doc.table(["rejected because", "lines"], [[k, v] for k, v in report["reject_reasons"].items()])


def _trust_section(doc: Doc, out: Path, m: dict) -> None:
    doc.heading("Trust")
    doc.text(f"Scheme `{m['scheme']}`: {m['users_with_feedback']} users with feedback, mean trust {_num(m['mean_trust'])}, "
             f"{m['distrusted_users']} distrusted (trust below {m['config'].get('cut', 0.5)}), "
             f"{_num(m['weight_kept'], '.1%')} of the label weight kept.")
    if m.get("user", {}).get("auc") is not None:
        rows = [[level, m[key]["auc"], m[key]["precision"], m[key]["recall"], m[key]["n"], m[key]["n_bad"]]
                for level, key in (("users", "user"), ("labels", "example")) if key in m]
        doc.table(["troll detection", "AUC", "precision", "recall", "n", "bad"], rows)
        doc.text(f"Label weight kept: helpers {m['helper_weight_kept']:.1%}, trolls {m['troll_weight_kept']:.1%}.")
    if m.get("mean_trust_by_type"):
        doc.table(["user type (ground truth)", "mean trust"], [[k, v] for k, v in m["mean_trust_by_type"].items()])
    doc.image(out / "trust" / "trust.png", "trust distribution")
    for note in m.get("notes", []):
        doc.text(f"Note: {note}")


def _reward_section(doc: Doc, out: Path, plots: Path, m: dict) -> None:
    doc.heading("Reward model")
    t = m["train"]
    doc.text(f"Spec `{m['spec']}` on base `{m['base']}`: {t['thumbs']} thumbs and {t['pairs']} A/B choices, "
             f"{t['steps']} steps, {'trust-weighted' if m.get('trust') else 'uniform weights'}.")
    e = m["eval"]
    rows = []
    for label, key in (("held-out organic thumbs", "pointwise"), ("clean labels (ground truth)", "clean_pointwise")):
        if key in e:
            rows.append([label, e[key].get("auc"), e[key].get("accuracy"), e[key].get("calibration_error"), e[key].get("n")])
    doc.table(["evaluated on", "AUC", "accuracy", "calibration error", "n"], rows)
    pair_rows = [[label, e[key]["accuracy"], e[key]["n"]] for label, key in
                 (("held-out A/B choices", "pairwise"), ("clean A/B choices", "clean_pairwise")) if key in e]
    doc.table(["evaluated on", "A/B accuracy", "n"], pair_rows)
    by_type = e.get("pointwise_by_user_type", {})
    if by_type:
        doc.table(["held-out thumbs by user type", "AUC", "accuracy", "n"],
                  [[k, v.get("auc"), v.get("accuracy"), v.get("n")] for k, v in by_type.items()])
    history = out / "reward" / "history.json"
    if history.is_file() and plot_loss_curves(plots / "reward_loss.png", json.loads(history.read_text()), "reward model training loss"):
        doc.image(plots / "reward_loss.png", "reward model training loss")


def _policy_section(doc: Doc, out: Path, plots: Path, m: dict, samples_shown: int, shown: bool = False) -> None:
    doc.heading("Policy")
    t = m["train"]
    doc.text(f"Method `{m['method']}` on base `{m['base']}`, {'trust-weighted' if m['weighted'] else 'uniform weights'}: "
             f"{t['steps']} steps, {t['trainable_parameters']:,} trainable parameters (LoRA).")
    e = m.get("eval", {})
    rows = []
    if "judge" in e:
        j = e["judge"]
        rows += [["clean judge p(good)", j["base_good"], j["tuned_good"], _change(j["base_good"], j["tuned_good"])],
                 ["clean judge unsafe rate", j["base_unsafe_rate"], j["tuned_unsafe_rate"],
                  _change(j["base_unsafe_rate"], j["tuned_unsafe_rate"])]]
    if "reward" in e:
        rows.append(["reward model score", e["reward"]["base"], e["reward"]["tuned"], _change(e["reward"]["base"], e["reward"]["tuned"])])
    if "base_reply_tokens" in e:
        rows.append(["reply length (tokens)", e["base_reply_tokens"], e["tuned_reply_tokens"],
                     _change(e["base_reply_tokens"], e["tuned_reply_tokens"])])
    doc.table(["on " + str(e.get("contexts", 0)) + " held-out contexts", "base", "tuned", "change"], rows)
    extra = []
    if "judge" in e:
        extra.append(f"tuned reply preferred by the clean judge on {e['judge']['win_rate']:.1%} of contexts")
    if "kl_to_reference" in e:
        extra.append(f"KL to the base {e['kl_to_reference']:.3f} per reply")
    if extra:
        sentence = "; ".join(extra)
        doc.text(sentence[0].upper() + sentence[1:] + ".")
    rounds = t.get("rounds") or []
    if rounds and {"score", "reply_tokens"} <= set(rounds[0]):
        # the online methods' samples, first round against last: a reward that rises only with length is hacked
        doc.text(f"Over {len(rounds)} rounds the policy's samples went from a reward-model score of {rounds[0]['score']:.3f} "
                 f"to {rounds[-1]['score']:.3f}, and from {rounds[0]['reply_tokens']:.1f} to {rounds[-1]['reply_tokens']:.1f} "
                 "reply tokens.")
    if "judge" in e and plot_before_after(plots / "policy_before_after.png", e["judge"]):
        doc.image(plots / "policy_before_after.png", "policy before and after, clean judge")
    history = out / "policy" / "history.json"
    if history.is_file() and plot_loss_curves(plots / "policy_loss.png", json.loads(history.read_text()), f"{m['method']} training loss"):
        doc.image(plots / "policy_loss.png", "policy training loss")
    samples = out / "policy" / "samples.parquet"
    if samples_shown and samples.is_file():
        _samples(doc, samples, samples_shown, shown)


def _samples(doc: Doc, path: Path, n: int, shown: bool = False) -> None:
    """Base and tuned replies side by side; the user's last turn only when ``shown`` (else a note)."""
    import pandas as pd

    frame = pd.read_parquet(path).head(n)
    judged = "tuned_judge_good" in frame
    doc.heading("Sample replies, base and tuned", 3)
    doc.text("Held-out contexts (" + ("last user turn shown" if shown else "user text hidden: set output.show_user_text "
             "to show it") + "), the base model's reply and the tuned policy's (both generated), "
             + ("with the clean judge's p(good)." if judged else "with the reward model's score.") + " More in `policy/samples.md`.")
    rows = []
    for row in frame.itertuples():
        users = [m["content"] for m in row.context if m["role"] == "user"]
        said = (users[-1] if users else "") if shown else HIDDEN_TEXT
        score = (lambda k: getattr(row, f"{k}_judge_good")) if judged else (lambda k: getattr(row, f"{k}_reward", None))
        rows.append([_clip(said), _clip(row.base_reply), score("base"), _clip(row.tuned_reply), score("tuned")])
    doc.table(["user said", "base reply", "score", "tuned reply", "score"], rows)


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _extend_model_card(folder: Path, recipe, markers: dict) -> None:
    """The policy's model card (``policy/README.md``, copied to ``policy/adapter/README.md``) with the
    run's headline numbers and recipe appended; rewritten from the stage's own card each time."""
    from ..recipe import dump_recipe

    card = folder / "README.md"
    if folder.is_symlink() or not card.is_file():  # a stage reused from a sibling run keeps its own card
        return
    text = card.read_text(encoding="utf-8").split("\n## From the run", 1)[0].rstrip("\n")
    text += "\n\n## From the run\n\n" + "\n".join(f"- {line}" for line in headline(markers))
    text += "\n\n### Recipe\n\n```yaml\n" + dump_recipe(recipe) + "```\n"
    card.write_text(text, encoding="utf-8")
    if (folder / "adapter").is_dir():
        (folder / "adapter" / "README.md").write_text(text, encoding="utf-8")


def console_summary(markers: dict) -> str:
    """What ``rlhf-organic run`` prints at the end (also ``report.txt``): dislike reasons only as the
    formats' labels, free text counted together (a log and a text file travel further than a report)."""
    from ..data.inspect import format_report

    parts = []
    if "ingest" in markers:
        parts.append(format_report(_public_view(markers["ingest"]["metrics"])))
    if "trust" in markers:
        from ..trust.stage import format_metrics

        parts.append("Trust\n" + format_metrics(markers["trust"]["metrics"]))
    if "reward" in markers:
        from ..reward.stage import format_metrics as format_reward

        parts.append("Reward model\n" + format_reward(markers["reward"]["metrics"]))
    if "policy" in markers:
        from ..policy.stage import format_metrics as format_policy

        parts.append("Policy\n" + format_policy(markers["policy"]["metrics"]))
    timing = ", ".join(f"{n} {m['seconds']:.0f} s{' (reused)' if m.get('reused') else ''}" for n, m in markers.items())
    parts.append(f"Stages: {timing}")
    return "\n\n".join(parts)
