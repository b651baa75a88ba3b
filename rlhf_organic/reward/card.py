"""The model card (README.md) written beside a trained reward model."""

from __future__ import annotations

from .spec import RewardSpec, dump_spec


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def model_card(spec: RewardSpec, metrics: dict) -> str:
    e, t = metrics["eval"], metrics["train"]
    lines = [
        "---",
        "library_name: peft",
        "tags: [rlhf_organic, reward-model, lora]",
        "---",
        f"# Reward model `{spec.name}`",
        "",
        f"Trained by rlhf_organic on {t['thumbs']} thumbs and {t['pairs']} A/B choices, "
        + (f"weighted by the trust folder `{metrics['trust']}`." if metrics["trust"] else "with uniform weights."),
        f"Base: `{spec.base}`, LoRA r={spec.lora.r}, {t['trainable_parameters']:,} trainable parameters, "
        f"{t['steps']} steps, {metrics['seconds']['train']:.1f} s.",
        "",
        "The score is a logit: `sigmoid(score)` estimates P(a trusted user likes the reply).",
        "",
        "## Held-out evaluation",
        "",
        "| metric | n | value |",
        "|---|---:|---:|",
    ]
    for key, label, field in [
        ("pointwise", "thumbs AUC", "auc"), ("pointwise", "thumbs accuracy", "accuracy"),
        ("pointwise", "thumbs calibration error (ECE)", "calibration_error"), ("pairwise", "A/B accuracy", "accuracy"),
        ("clean_pointwise", "clean-label AUC", "auc"), ("clean_pointwise", "clean-label accuracy", "accuracy"),
        ("clean_pairwise", "clean A/B accuracy", "accuracy"),
    ]:
        if key in e:
            lines.append(f"| {label} | {e[key]['n']} | {_fmt(e[key].get(field))} |")
    for key in sorted(k for k in e if "_by_" in k):
        lines += ["", f"### {key.replace('_', ' ')}", "", "| group | n | AUC / accuracy |", "|---|---:|---:|"]
        for group, m in e[key].items():
            lines.append(f"| {group} | {m['n']} | {_fmt(m.get('auc', m.get('accuracy')))} |")
    lines += ["", "Held-out thumbs include distrusted users' own labels; the clean-label rows are the ones that "
              "say whether trust weighting worked.", "", "## Loading", "", "```python",
              "from rlhf_organic.reward.model import load_reward_model",
              "model, tokenizer, meta = load_reward_model('PATH/TO/THIS/FOLDER')", "```", "",
              "or `rlhf-organic reward score PATH/TO/THIS/FOLDER --data DATASET --out scores.parquet`.", "",
              "## Spec", "", "```yaml", dump_spec(spec).rstrip(), "```", ""]
    return "\n".join(lines)
