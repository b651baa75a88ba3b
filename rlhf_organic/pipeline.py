"""``rlhf-organic run``: the stages of a recipe, in order, into one run folder.

Run folder: ``recipe.yaml`` (resolved), one subfolder per stage (``simulation/`` when the data is
simulated, ``dataset/``, ``trust/``, ``reward/`` and ``policy/`` when the recipe has those sections, and
``judge/``, the clean judge, when a simulated run trains a policy, and ``base/``, the tiny policy base,
when ``policy.base`` is ``tiny``), ``report.md`` + ``report.html`` (+
their plots in ``report/``), ``report.txt`` (what the console shows) and, with tensorboard,
``tensorboard/``.

Every stage writes its folder under a temporary name and renames it when complete; then the run writes
the stage's completion marker ``stage.json`` into it, last: the stage's fingerprint (a hash of its
settings, the seed, its input files and the fingerprints of the stages it reads), its metrics, time and
peak memory. ``--resume`` reuses every stage whose marker carries the fingerprint the stage would have
now, and recomputes the rest, continuing a stage's training from its last checkpoint
(``checkpoint.py``) when an earlier attempt died in the middle of it; an ablation also reuses a stage
completed in a sibling run with the same fingerprint (through a symbolic link).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic
from .atomic import write_text
from .errors import UserError
from .fingerprint import files_signature, fingerprint
from .recipe import Recipe, dump_recipe

MARKER = "stage.json"
CHECKPOINTS = ".checkpoints"  # in the run folder: training checkpoints of the stage under way


@dataclass
class Stage:
    """One step of the pipeline: ``run(folder)`` writes ``folder`` and returns the stage's metrics."""

    name: str
    folder: str
    needs: tuple[str, ...]
    settings: dict
    run: Callable[[Path], dict] = field(repr=False)


def plan_stages(recipe: Recipe, out: Path, *, progress: bool | None = None, log: Callable[[str], None] = print) -> list[Stage]:
    """The stages ``recipe`` declares, in order, reading and writing under the run folder ``out``."""
    data, seed = recipe.data, recipe.seed
    stages: list[Stage] = []
    ground_truth = recipe.trust.ground_truth
    truth_settings: dict = {}
    if data.source == "simulate":
        config = data.simulate.config(seed)

        def simulate(folder: Path) -> dict:
            from .simulator.simulate import simulate as run_simulation

            return run_simulation(config, folder, progress=progress).counts

        stages.append(Stage("simulate", "simulation", (), config.model_dump(mode="json"), simulate))
        inputs = [str(out / "simulation" / "logs")]
        ground_truth = ground_truth or str(out / "simulation" / "ground_truth.parquet")
        input_settings: dict = {}
    else:
        inputs = list(data.inputs)
        found = _find_data_inputs(inputs)
        input_settings = {"files": files_signature(found.files)}
        if found.unreadable:  # once readable, they change the fingerprint: the dataset is made again
            input_settings["unreadable"] = sorted(path for path, _ in found.unreadable)
    if recipe.trust.ground_truth:  # a file outside the run folder: its signature is part of the inputs
        truth = Path(recipe.trust.ground_truth)
        truth_settings = {"ground_truth": files_signature(sorted(truth.glob("ground_truth*.parquet")) if truth.is_dir() else [truth])}
    simulated = ("simulate",) if data.source == "simulate" else ()

    def ingest(folder: Path) -> dict:
        from .data.ingest import ingest as run_ingest
        from .data.inspect import inspect_dataset

        run_ingest(inputs, folder, fmt=data.format, strict=data.strict, chunk_bytes=data.chunk_mb << 20,
                   max_context=data.max_context, progress=progress, log=log, privacy=data.privacy,
                   engine=data.engine, ray_address=data.ray_address)
        return inspect_dataset(folder, how_to_show="output.show_user_text")  # the marker: reason labels only

    privacy = data.privacy.settings()  # {} when off; a missing salt fails here, before any stage runs
    stages.append(Stage("ingest", "dataset", simulated, {**input_settings, **data.model_dump(
        mode="json", include={"format", "strict", "max_context"}), **({"privacy": privacy} if privacy else {})}, ingest))

    def trust(folder: Path) -> dict:
        from .trust.stage import compute_trust

        return compute_trust(out / "dataset", folder, recipe.trust, seed=seed, ground_truth=ground_truth,
                             progress=progress, log=log)

    where = {"engine", "ray_address"}  # where trust runs does not change what it writes: not part of its fingerprint
    stages.append(Stage("trust", "trust", ("ingest", *simulated),
                        {"trust": recipe.trust.model_dump(mode="json", exclude=where), "seed": seed, **truth_settings}, trust))

    if recipe.reward is not None:
        spec = recipe.reward.resolve()
        weighted = recipe.reward.weighted

        def reward(folder: Path) -> dict:
            from .reward.stage import train_reward

            return train_reward(out / "dataset", folder, spec, trust=out / "trust" if weighted else None,
                                ground_truth=ground_truth, seed=seed, progress=progress, log=log)

        stages.append(Stage("reward", "reward", ("ingest", "trust", *simulated),
                            {"spec": spec.model_dump(mode="json"), "weighted": weighted, "seed": seed, **truth_settings},
                            reward))

    if recipe.policy is not None:
        section = recipe.policy
        judged = data.source == "simulate"
        if judged:
            def judge(folder: Path) -> dict:
                from .evaluation.judge import train_judge

                return train_judge(out / "dataset", out / "simulation", folder, eval_fraction=section.eval_fraction,
                                   seed=seed, progress=progress, log=log)

            stages.append(Stage("judge", "judge", ("ingest", "simulate"),
                                {"eval_fraction": section.eval_fraction, "seed": seed}, judge))

        needs = ("ingest", "trust") + (("reward",) if recipe.reward is not None else ()) + (("judge",) if judged else ())
        trained = section
        if section.base == "tiny":  # its own stage, so that runs differing only in trust or method share it
            def base(folder: Path) -> dict:
                from .atomic import atomic_dir
                from .policy.tiny_base import build_tiny_base

                with atomic_dir(folder, kind="tiny base") as tmp:
                    build_tiny_base(out / "dataset", tmp, section, seed=seed, progress=progress, log=log)
                return {"base": "tiny", **section.tiny.model_dump()}

            stages.append(Stage("base", "base", ("ingest",), {
                "tiny": section.tiny.model_dump(mode="json"), "seed": seed, "train": section.train.model_dump(mode="json"),
                **section.model_dump(mode="json", include={"eval_fraction", "max_prompt_length", "max_completion_length"}),
            }, base))
            trained = section.model_copy(update={"base": str((out / "base").absolute())})
            needs += ("base",)

        def policy(folder: Path) -> dict:
            from .policy.stage import train_policy

            return train_policy(out / "dataset", folder, trained, trust=out / "trust",
                                reward=out / "reward" if recipe.reward is not None else None,
                                judge=out / "judge" if judged else None, seed=seed, progress=progress, log=log)

        stages.append(Stage("policy", "policy", needs, {"policy": section.model_dump(mode="json"), "seed": seed}, policy))
    return stages


def read_marker(folder: Path) -> dict | None:
    """The completion marker of a stage folder, or None when the stage did not complete."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_marker(folder: Path, marker: dict) -> None:
    """Written last, through a temporary file and a rename: a marker is never half-written."""
    write_text(folder / MARKER, json.dumps(marker, indent=2, default=str) + "\n")


def _clear(path: Path) -> None:
    """Remove a stale stage folder (only one the package marked); a link to a sibling run's folder is
    unlinked, never followed."""
    atomic.remove_output(path)


def _find_data_inputs(inputs: list[str]):
    from .data.sources import find_inputs

    try:
        return find_inputs(inputs)
    except UserError as exc:
        raise UserError(f"data.inputs: {exc}") from None


def run_inputs(recipe: Recipe, recipe_path: str | Path | None, out: Path, resume: bool = False) -> list[tuple[str, Path]]:
    """What a run reads from outside its folder, which its folder may not be, contain or sit inside: the
    recipe file, the log files and folders (``data.source: files``) and ``trust.ground_truth``.

    With ``resume``, the run folder's own ``recipe.yaml`` may be the recipe: resuming from it is natural,
    and a resumed run never deletes it (it rewrites it with the settings it runs with)."""
    inputs: list[tuple[str, Path]] = []
    own = resume and recipe_path is not None and os.path.realpath(recipe_path) == os.path.realpath(out / "recipe.yaml")
    if recipe_path is not None and not own:
        inputs.append(("recipe", Path(recipe_path)))
    if recipe.data.source == "files":
        found = _find_data_inputs(list(recipe.data.inputs))
        inputs += [("input", p) for p in (*found.folders, *found.files)]
        inputs += [("input", Path(p)) for p, _ in found.unreadable]
    if recipe.trust.ground_truth:
        inputs.append(("ground truth", Path(recipe.trust.ground_truth)))
    return inputs


def check_run_folder(out: Path, resume: bool, overwrite: bool, inputs: list[tuple[str, Path]], *,
                     what: str = "run folder", retry: str = "output.dir") -> None:
    """Refuse a run (or ablation) folder that would lose data: one that is, contains or sits inside an
    input, and a non-empty one that rlhf-organic did not write (whether to resume or to replace it)."""
    if (why := atomic.overlap(out, inputs)) is not None:
        raise UserError(why)
    if not out.exists() or (out.is_dir() and atomic.is_empty(out)):
        return
    if not out.is_dir():
        raise UserError(f"{what} {out} exists and is not a folder; choose another {retry}")
    if not resume and not overwrite:
        raise UserError(f"{what} {out} exists; pass --resume to continue it (completed stages are reused), "
                        f"output.overwrite=true to replace it, or choose another {retry}")
    if not atomic.is_output(out):
        raise UserError(atomic.not_ours(out))


@contextmanager
def run_folder(out: Path, *, resume: bool, overwrite: bool, inputs: list[tuple[str, Path]], kind: str = "run",
               log: Callable[[str], None] = print, **names):
    """The checked, marked and locked run (or ablation) folder ``out`` for the block: emptied first when
    replaced (``overwrite`` without ``resume``); the folder itself stays, since it may be the current one."""
    check_run_folder(out, resume, overwrite, inputs, **names)
    out.mkdir(parents=True, exist_ok=True)
    if not atomic.is_output(out):  # new or empty: from now on ours
        atomic.mark_output(out, kind)
    with atomic.locked(out, what=names.get("what", "run folder"), log=log):
        if overwrite and not resume:
            atomic.empty_output(out)
        yield out


def run_recipe(
    recipe: Recipe,
    *,
    resume: bool = False,
    reuse_from: tuple[Path, ...] = (),
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
    recipe_path: str | Path | None = None,
) -> dict:
    """Run every stage the recipe declares; returns each stage's completion marker (metrics, timings).

    ``resume``: keep the run folder and reuse its completed stages whose fingerprint still matches.
    ``reuse_from``: other run folders whose completed stages may be reused when their fingerprint matches.
    ``recipe_path``: the recipe's file, which the run folder may not hold (``run_inputs``).
    The run folder is locked for the run: a second run into it meanwhile is refused.
    """
    from .tracking import resolve

    out = recipe.output_dir()
    trackers = resolve(recipe.output.report_to)  # a missing tracker package fails before any work
    inputs = run_inputs(recipe, recipe_path, out, resume)
    with run_folder(out, resume=resume, overwrite=recipe.output.overwrite, inputs=inputs, log=log):
        write_text(out / "recipe.yaml", dump_recipe(recipe))
        return _run_stages(recipe, out, trackers, reuse_from, progress, log, echo, verbose)


def _run_stages(recipe: Recipe, out: Path, trackers, reuse_from, progress, log, echo, verbose) -> dict:
    from .reporting.run import console_summary, write_run_report
    from .tracking import live, open_tracker

    tracker = open_tracker(trackers, out, recipe, dump_recipe(recipe), log=log)
    started = time.perf_counter()
    prints: dict[str, str] = {}
    markers: dict[str, dict] = {}
    failed = True
    try:
        stages = plan_stages(recipe, out, progress=progress, log=log)
        for number, stage in enumerate(stages, 1):
            prints[stage.name] = fingerprint(stage.name, stage.settings, [prints[n] for n in stage.needs])
            folder = out / stage.folder
            marker = _reuse(stage, folder, prints[stage.name], reuse_from, log)
            if marker is None:
                log(f"[{number}/{len(stages)}] {stage.name}")
                if verbose:
                    log(f"[{stage.name}] fingerprint {prints[stage.name]}; settings {json.dumps(stage.settings, default=str)[:2000]}")
                with live(tracker, stage.name):
                    marker = _run_stage(stage, folder, prints[stage.name], recipe.output, log)
                log(f"[{stage.name}] done in {marker['seconds']:.1f} s, peak memory {marker['peak_rss_mb']} MB")
            markers[stage.name] = marker
            tracker.log_stage(number, stage.name, marker, folder)
        total = round(time.perf_counter() - started, 2)
        write_run_report(out, recipe, markers, total)
        text = console_summary(markers)
        write_text(out / "report.txt", text + "\n")
        echo(text)
        failed = False
    finally:
        tracker.close(failed=failed)
    log(f"[done] {total:.0f} s; report: {out / 'report.md'} (and report.html)")
    return markers


def _run_stage(stage: Stage, folder: Path, print_: str, output, log: Callable[[str], None] = print) -> dict:
    """Run a stage afresh, or on from its training checkpoint when an earlier attempt died in it."""
    from .checkpoint import checkpointing
    from .monitor import measure

    _clear(folder)
    atomic.remove_stale_partials(folder)  # left by a killed attempt (the run folder is locked: none is live)
    checkpoints = folder.parent / CHECKPOINTS
    for old in checkpoints.glob(f"{stage.name}-*"):
        if old.name != f"{stage.name}-{print_}":  # another fingerprint: of no use now
            shutil.rmtree(old, ignore_errors=True)
    with measure() as usage, checkpointing(checkpoints / f"{stage.name}-{print_}", output.checkpoint_steps,
                                           output.checkpoint_minutes, stage=stage.name, log=log):
        metrics = stage.run(folder)
    marker = {"stage": stage.name, "fingerprint": print_, "completed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **usage, "reused": False, "metrics": metrics}
    write_marker(folder, marker)
    shutil.rmtree(checkpoints / f"{stage.name}-{print_}", ignore_errors=True)
    return marker


def _reuse(stage: Stage, folder: Path, print_: str, reuse_from: tuple[Path, ...], log) -> dict | None:
    """The stage's marker when a completed stage with this fingerprint exists here or in ``reuse_from``."""
    here = read_marker(folder)
    if here is not None and here.get("fingerprint") == print_:
        log(f"[{stage.name}] reused: completed earlier with the same settings and inputs")
        return {**here, "reused": True}
    for other in reuse_from:
        donor = Path(other) / stage.folder
        there = read_marker(donor)
        if there is not None and there.get("fingerprint") == print_ and donor.resolve() != folder.resolve():
            _clear(folder)
            folder.symlink_to(os.path.relpath(donor.resolve(), folder.parent.resolve()), target_is_directory=True)
            log(f"[{stage.name}] reused from {other}: same settings and inputs")
            return {**there, "reused": True}
    return None
