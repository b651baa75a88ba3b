"""Safe loading: no pickle, no unsafe YAML, no model code run unless a recipe allows it, and output paths
built from names kept inside their folder (docs/safety.md)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import tokenize
import uuid
from pathlib import Path

import pytest

from rlhf_organic.data.privacy import HIDDEN_TEXT
from rlhf_organic.errors import UserError
from rlhf_organic.safepath import PathEscapeError, confined

PACKAGE = Path(__file__).resolve().parents[1] / "rlhf_organic"

# What the package must never do. Matched against code with strings and comments removed, so that
# documentation (and a model card's example snippet) may name them.
FORBIDDEN = {
    "pickle": re.compile(r"\b(c?pickle|cloudpickle|dill|joblib|shelve)\b|\bmarshal\.loads?\b|read_pickle|to_pickle"),
    "torch.load without weights_only=True": re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"),
    "weights_only=False": re.compile(r"weights_only\s*=\s*False"),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "unsafe YAML": re.compile(r"\byaml\.(load|load_all|unsafe_load|unsafe_load_all|full_load|full_load_all)\("
                              r"|Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)\b"),
    "trust_remote_code=True": re.compile(r"trust_remote_code\s*=\s*True"),
    "eval / exec of text": re.compile(r"(?<![.\w])(eval|exec)\("),
}

# Known exceptions, each with its reason (none now: distributed.gather moved from pickle to JSON).
ALLOWED: set = set()


def code_only(source: str) -> str:
    """``source`` with every string literal and comment blanked (line structure kept)."""
    drop = {tokenize.STRING, tokenize.COMMENT}
    drop |= {getattr(tokenize, name) for name in ("FSTRING_MIDDLE", "TSTRING_MIDDLE") if hasattr(tokenize, name)}
    lines = source.splitlines(keepends=True)
    out = [list(line) for line in lines]
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in drop:
            continue
        (r0, c0), (r1, c1) = tok.start, tok.end
        for row in range(r0, r1 + 1):
            line = out[row - 1]
            start = c0 if row == r0 else 0
            end = c1 if row == r1 else len(line)
            for col in range(start, min(end, len(line))):
                if line[col] != "\n":
                    line[col] = " "
    return "".join("".join(line) for line in out)


def scan(source: str) -> list[str]:
    code = code_only(source)
    return [name for name, pattern in FORBIDDEN.items() if pattern.search(code)]


def test_the_scan_finds_what_it_looks_for_and_ignores_strings_and_comments():
    assert scan("import pickle\n") == ["pickle"]
    assert scan("x = torch.load(path)\n") == ["torch.load without weights_only=True"]
    assert scan("x = torch.load(path, map_location='cpu', weights_only=True)\n") == []
    assert scan("yaml.load(text, Loader=yaml.FullLoader)\n") == ["unsafe YAML"]
    assert scan("yaml.safe_load(text)\nyaml.compose(text, Loader=yaml.SafeLoader)\n") == []
    assert scan("AutoModel.from_pretrained(x, trust_remote_code=True)\n") == ["trust_remote_code=True"]
    assert scan("eval(text)\n") == ["eval / exec of text"]
    assert scan("model.eval()\n") == []
    assert scan('"""torch.load(x) and pickle, in a docstring"""\n# yaml.load( in a comment\n') == []
    assert scan("snippet = ', trust_remote_code=True)'\n") == []


def test_the_package_loads_nothing_unsafely():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for problem in scan(path.read_text(encoding="utf-8")):
            if (path.name, problem) not in ALLOWED:
                found.append(f"{path.relative_to(PACKAGE.parent)}: {problem}")
    assert not found, "unsafe loading in the package:\n" + "\n".join(found)


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    from rlhf_organic.errors import RecipeError
    from rlhf_organic.recipe import load_recipe

    recipe = tmp_path / "evil.yaml"
    recipe.write_text("name: !!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(recipe)


# ---- trust_remote_code ---------------------------------------------------------------------------

PROBE = '''
import os, pathlib
pathlib.Path(os.environ["RLHF_ORGANIC_PROBE_MARKER"]).write_text("the model's own code ran")
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, PreTrainedTokenizerFast
class ProbeConfig(LlamaConfig):
    model_type = "rlhf_organic_probe"
class ProbeModel(LlamaModel):
    config_class = ProbeConfig
class ProbeForCausalLM(LlamaForCausalLM):
    config_class = ProbeConfig
class ProbeTokenizer(PreTrainedTokenizerFast):
    pass
'''


@pytest.fixture
def remote_code_model(tmp_path, monkeypatch):
    """A tiny local model folder whose config and tokenizer config name their own code (auto_map): code
    that, if run, writes a marker file."""
    from transformers.dynamic_module_utils import HF_MODULES_CACHE

    from rlhf_organic.models.tiny import save_tiny

    name = f"rlhf_organic_probe_{uuid.uuid4().hex[:8]}"  # a fresh dynamic-module name: nothing cached
    folder = save_tiny(tmp_path / name, ["hello there, how are you?", "fine thanks, and you?"] * 20,
                       vocab_size=300, hidden=16, layers=1, heads=2)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="rlhf_organic_probe", architectures=["ProbeForCausalLM"], auto_map={
        "AutoConfig": "probe.ProbeConfig", "AutoModel": "probe.ProbeModel",
        "AutoModelForCausalLM": "probe.ProbeForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "probe.ProbeTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "probe.py").write_text(PROBE)
    marker = tmp_path / "marker"
    monkeypatch.setenv("RLHF_ORGANIC_PROBE_MARKER", str(marker))
    yield folder, marker
    shutil.rmtree(Path(HF_MODULES_CACHE) / "transformers_modules" / name, ignore_errors=True)
    for module in [m for m in sys.modules if name in m]:
        del sys.modules[module]


def test_a_models_own_code_is_refused_without_the_flag_and_runs_with_it(remote_code_model):
    from rlhf_organic.models.loading import BaseModelError, load_base, load_tokenizer

    folder, marker = remote_code_model
    with pytest.raises(BaseModelError, match="trust_remote_code: true"):
        load_base(str(folder), causal_lm=True)
    with pytest.raises(BaseModelError, match="trust_remote_code"):
        load_base(str(folder))
    load_tokenizer(str(folder))  # transformers falls back to its own tokenizer class: no code of the model's runs
    assert not marker.exists()
    model = load_base(str(folder), causal_lm=True, trust_remote_code=True)
    assert type(model).__name__ == "ProbeForCausalLM" and marker.exists()
    assert type(load_tokenizer(str(folder), trust_remote_code=True)).__name__ == "ProbeTokenizer"


def test_the_reward_spec_and_the_policy_section_pass_the_flag_to_from_pretrained(remote_code_model):
    from rlhf_organic.models.loading import BaseModelError
    from rlhf_organic.policy.config import PolicySection
    from rlhf_organic.policy.model import build_policy
    from rlhf_organic.reward.model import build_reward_model
    from rlhf_organic.reward.spec import RewardSpec

    folder, marker = remote_code_model
    spec = RewardSpec(base=str(folder))
    assert spec.trust_remote_code is False and PolicySection().trust_remote_code is False
    with pytest.raises(BaseModelError, match="trust_remote_code"):
        build_reward_model(spec, folder.parent / "reward")
    section = PolicySection(base=str(folder))
    with pytest.raises(BaseModelError, match="trust_remote_code"):
        build_policy(section.base, section.lora, trust_remote_code=section.trust_remote_code, log=lambda m: None)
    assert not marker.exists()
    model, _ = build_reward_model(spec.model_copy(update={"trust_remote_code": True}), folder.parent / "reward")
    assert marker.exists()
    marker.unlink()
    policy = build_policy(str(folder), section.lora, trust_remote_code=True, log=lambda m: None)
    assert type(policy.peft.get_base_model()).__name__ == "ProbeForCausalLM"


def test_the_command_line_turns_the_flag_on_for_training_and_scoring(remote_code_model, tmp_path):
    """``reward train`` / ``policy train`` take ``--set trust_remote_code=true``, ``reward score`` takes
    ``--trust-remote-code``; without them a base with its own code is refused and none of it runs."""
    from click.testing import CliRunner

    from rlhf_organic.cli import main

    folder, marker = remote_code_model
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args])

    for args in (["simulate", "--preset", "tiny", "--users", "6", "--out", tmp_path / "sim", "-q"],
                 ["ingest", tmp_path / "sim" / "logs", "--out", tmp_path / "ds", "-q"]):
        assert invoke(*args).exit_code == 0
    reward = ["reward", "train", tmp_path / "ds", "--spec", "tiny", "--set", f"base={folder}", "--set", "train.epochs=0.2",
              "--out", tmp_path / "rm", "-q"]
    refused = invoke(*reward)
    assert refused.exit_code == 2 and "trust_remote_code" in refused.stderr and not marker.exists()
    assert "--set trust_remote_code=true" in refused.stderr  # the switch this command has
    assert invoke(*reward, "--set", "trust_remote_code=true").exit_code == 0 and marker.exists()
    # the model's module is imported once per process: from here on only the refusals can show it did not run

    score = ["reward", "score", tmp_path / "rm", "--data", tmp_path / "ds", "-q"]
    refused = invoke(*score, "--out", tmp_path / "s1.parquet")
    assert refused.exit_code == 2 and "--trust-remote-code" in refused.stderr
    assert "policy.trust_remote_code" not in refused.stderr and "reward.override" not in refused.stderr
    assert invoke(*score, "--out", tmp_path / "s2.parquet", "--trust-remote-code").exit_code == 0
    assert (tmp_path / "s2.parquet").is_file()

    policy = ["policy", "train", tmp_path / "ds", "--method", "kto", "--set", f"base={folder}",
              "--set", "train.max_items=4", "--set", "eval.contexts=2", "--set", "eval.sampling.max_new_tokens=4",
              "--set", "export_merged=false", "--out", tmp_path / "policy", "-q"]
    refused = invoke(*policy)
    assert refused.exit_code == 2 and "--set trust_remote_code=true" in refused.stderr
    done = invoke(*policy, "--set", "trust_remote_code=true", "--show-user-text")
    assert done.exit_code == 0, done.output
    assert (tmp_path / "policy" / "adapter").is_dir()
    assert HIDDEN_TEXT not in (tmp_path / "policy" / "samples.md").read_text()  # --show-user-text: shown


def test_a_saved_model_folder_cannot_turn_the_flag_on_by_itself(tmp_path):
    from rlhf_organic.models.loading import BaseModelError
    from rlhf_organic.reward.model import META_FILE, load_reward_model

    (tmp_path / META_FILE).write_text(json.dumps({"format": 1, "base": "some/model", "pooling": "last", "reasons": [],
                                                  "max_length": 64, "dtype": "float32", "quantization": "none",
                                                  "trust_remote_code": True}))
    with pytest.raises(BaseModelError, match="needs trust_remote_code"):
        load_reward_model(tmp_path)


def test_shipped_specs_and_recipes_keep_the_flag_off():
    from rlhf_organic.reward.spec import SPEC_DIRS, load_spec

    root = PACKAGE.parent
    for spec in sorted((root / "reward_models").glob("*.yaml")):
        assert load_spec(str(spec)).trust_remote_code is False, spec
    for recipe in sorted((root / "recipes").glob("*.yaml")):
        text = recipe.read_text()
        assert not re.search(r"trust_remote_code:\s*true", text, re.I), recipe
    assert SPEC_DIRS  # the spec folder exists where load_spec looks


# ---- paths built from names ---------------------------------------------------------------------

def test_confined_accepts_names_inside_the_root(tmp_path):
    assert confined(tmp_path, "cells", "trust.scheme=combined", "seed0") == tmp_path / "cells" / "trust.scheme=combined" / "seed0"
    assert confined(tmp_path, "a..b", "..c") == tmp_path / "a..b" / "..c"  # dots inside a name are fine
    assert confined(tmp_path, "sub/dir") == tmp_path / "sub" / "dir"


@pytest.mark.parametrize("name", ["..", "../escape", "a/../../b", "a/..", "..\\escape", "/etc/passwd", "/", "C:\\x",
                                  "C:x", "\\\\server\\share", "a\x00b", ""])
def test_confined_refuses_escapes(tmp_path, name):
    with pytest.raises(PathEscapeError) as err:
        confined(tmp_path / "root", name, what="user id")
    assert isinstance(err.value, UserError) and ("user id" in str(err.value))


def test_confined_refuses_a_symlink_that_leads_out(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscapeError, match="symbolic link"):
        confined(root, "link", "file.txt")
    (root / "inner").mkdir()
    (root / "ok").symlink_to(root / "inner", target_is_directory=True)
    assert confined(root, "ok", "file.txt") == root / "ok" / "file.txt"  # a link that stays inside is fine


def test_ablation_cell_folders_stay_inside_and_never_collide(tmp_path):
    from rlhf_organic.ablate import _slug, plan_cells

    assert _slug("..") == "cell" and _slug(".") == "cell" and _slug("../../x") == ".._.._x" and _slug("a/b") == "a_b"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    out = tmp_path / "ablation"
    cells = plan_cells(recipe, [], {"data.inputs": [["../../a b"], ["../../a_b"], ["/etc"]]}, 1, out)
    folders = [c.folder for c in cells]
    assert len(set(folders)) == 3
    for folder in folders:
        assert os.path.realpath(folder).startswith(os.path.realpath(out / "cells") + os.sep)


# ---- saved model folders: damaged, incomplete or tampered -----------------------------------------

TEXTS = ["hello there, how are you?", "fine thanks, and you?", "that is off topic"] * 20
TINY = ["tiny.hidden=16", "tiny.layers=1", "tiny.heads=2", "tiny.vocab_size=300", "max_length=16"]


@pytest.fixture(scope="module")
def saved_folders(tmp_path_factory):
    """An untrained reward-model folder and policy folder, each on its own tiny base (seconds, no training)."""
    from rlhf_organic.models.tiny import save_tiny
    from rlhf_organic.policy.config import PolicySection
    from rlhf_organic.policy.model import build_policy
    from rlhf_organic.policy.stage import save_policy
    from rlhf_organic.reward.model import build_reward_model, save_reward_model
    from rlhf_organic.reward.spec import load_spec

    root = tmp_path_factory.mktemp("folders")
    spec = load_spec("tiny", sets=TINY)
    model, tokenizer = build_reward_model(spec, root / "reward", TEXTS, ["off_topic"])
    save_reward_model(model, tokenizer, spec, ["off_topic"], root / "reward")
    save_tiny(root / "policy" / "base", TEXTS, vocab_size=300, hidden=16, layers=1, heads=2)
    section = PolicySection(base="tiny", export_merged=False)
    policy = build_policy(str(root / "policy" / "base"), section.lora, log=lambda m: None)
    save_policy(policy, section, root / "policy", base_in_folder=True)
    return root


def _copy(saved_folders, tmp_path, kind: str) -> Path:
    folder = tmp_path / kind
    shutil.copytree(saved_folders / kind, folder)
    return folder


def _pickled(path: Path) -> None:
    """A PyTorch .bin whose unpickling would run code (print): what a safe load must refuse."""
    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("the pickle ran",))

    torch.save({"weight": Payload()}, path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


def _meta(key):
    def edit(folder):
        path = folder / ("reward_model.json" if (folder / "reward_model.json").exists() else "policy.json")
        meta = json.loads(path.read_text())
        key(meta)
        path.write_text(json.dumps(meta))
    return edit


DAMAGE = {  # what is done to the folder -> (the file the message must name, what it must say)
    "meta truncated": (lambda f: _truncate(f / "reward_model.json"), "reward_model.json", "not valid JSON"),
    "meta not an object": (lambda f: (f / "reward_model.json").write_text("[1, 2]"), "reward_model.json", "JSON object"),
    "meta field missing": (_meta(lambda m: m.pop("pooling")), "reward_model.json", "pooling"),
    "meta field wrong": (_meta(lambda m: m.update(max_length="long")), "reward_model.json", "max_length"),
    "head missing": (lambda f: (f / "head.safetensors").unlink(), "head.safetensors", "missing"),
    "head truncated": (lambda f: _truncate(f / "head.safetensors"), "head.safetensors", "cannot be read"),
    "head of another size": (_meta(lambda m: m.update(reasons=["a", "b", "c"])), "head.safetensors", "does not fit"),
    "adapter config missing": (lambda f: (f / "adapter" / "adapter_config.json").unlink(), "adapter_config.json", "missing"),
    "adapter weights missing": (lambda f: (f / "adapter" / "adapter_model.safetensors").unlink(), "adapter_model.safetensors", "missing"),
    "adapter weights truncated": (lambda f: _truncate(f / "adapter" / "adapter_model.safetensors"), "adapter_model.safetensors",
                                  "cannot be read"),
    "own base missing": (lambda f: shutil.rmtree(f / "base"), "base", "missing"),
    "adapter pickled": (lambda f: ((f / "adapter" / "adapter_model.safetensors").unlink(),
                                   _pickled(f / "adapter" / "adapter_model.bin")), "adapter_model.bin", "pickled"),
    "own base pickled": (lambda f: ((f / "base" / "model.safetensors").unlink(), _pickled(f / "base" / "pytorch_model.bin")),
                         "pytorch_model.bin", "pickled"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_reward_model_folder_is_refused_naming_the_folder_and_file(saved_folders, tmp_path, damage, capfd):
    from rlhf_organic.models.loading import BaseModelError
    from rlhf_organic.reward.model import load_reward_model

    folder = _copy(saved_folders, tmp_path, "reward")
    load_reward_model(folder)  # intact, it loads
    do, name, says = DAMAGE[damage]
    do(folder)
    with pytest.raises(BaseModelError) as err:
        load_reward_model(folder)
    message = str(err.value)
    assert str(folder) in message and name in message and says in message, message
    assert "weights_only" not in message and "the pickle ran" not in capfd.readouterr().out


def test_reward_score_on_a_damaged_folder_exits_2_without_a_traceback(saved_folders, tmp_path):
    from click.testing import CliRunner

    from rlhf_organic.cli import main

    folder = _copy(saved_folders, tmp_path, "reward")
    (tmp_path / "data.jsonl").write_text('{"response": "hi"}\n')
    for damage in ("meta truncated", "head missing", "adapter pickled"):
        DAMAGE[damage][0](folder)
        res = CliRunner().invoke(main, ["reward", "score", str(folder), "--data", str(tmp_path / "data.jsonl"),
                                        "--out", str(tmp_path / "s.parquet"), "-q"])
        assert res.exit_code == 2 and "Traceback" not in res.output and DAMAGE[damage][1] in res.stderr, res.output
        shutil.rmtree(folder)
        folder = _copy(saved_folders, tmp_path, "reward")


POLICY_DAMAGE = {
    "meta truncated": (lambda f: _truncate(f / "policy.json"), "policy.json", "not valid JSON"),
    "meta field wrong": (_meta(lambda m: m.update(dtype="float99")), "policy.json", "dtype"),
    "adapter weights missing": DAMAGE["adapter weights missing"],
    "adapter pickled": DAMAGE["adapter pickled"],
    "own base missing": DAMAGE["own base missing"],
    "own base pickled": DAMAGE["own base pickled"],
}


@pytest.mark.parametrize("damage", POLICY_DAMAGE)
def test_a_damaged_policy_folder_is_refused_naming_the_folder_and_file(saved_folders, tmp_path, damage, capfd):
    from rlhf_organic.models.loading import BaseModelError
    from rlhf_organic.policy.stage import load_policy

    folder = _copy(saved_folders, tmp_path, "policy")
    load_policy(folder)
    do, name, says = POLICY_DAMAGE[damage]
    do(folder)
    with pytest.raises(BaseModelError) as err:
        load_policy(folder)
    message = str(err.value)
    assert str(folder) in message and name in message and says in message, message
    assert "weights_only" not in message and "the pickle ran" not in capfd.readouterr().out


def test_a_pickled_checkpoint_in_any_base_is_refused_with_our_message(saved_folders, tmp_path, capfd):
    """A base named by a spec or a recipe, not only a saved folder's own: transformers reads a .bin with
    torch.load(weights_only=True), which refuses it, with advice to pass weights_only=False."""
    from rlhf_organic.models.loading import BaseModelError, load_base

    base = tmp_path / "base"
    shutil.copytree(saved_folders / "policy" / "base", base)
    (base / "model.safetensors").unlink()
    _pickled(base / "pytorch_model.bin")
    with pytest.raises(BaseModelError) as err:
        load_base(str(base), causal_lm=True)
    message = str(err.value)
    assert "pytorch_model.bin" in message and str(base) in message and "weights_only" not in message, message
    assert "the pickle ran" not in capfd.readouterr().out


@pytest.mark.parametrize("base", ["../elsewhere", "sub/dir/model", "https://example.com/model", "", "~/model", 3,
                                  "/nonexistent/model/folder", "org/../../etc"])
def test_a_saved_folders_base_may_name_only_its_own_base_a_hub_id_or_an_absolute_path(saved_folders, tmp_path, base):
    from rlhf_organic.models.loading import BaseModelError
    from rlhf_organic.policy.stage import load_policy
    from rlhf_organic.reward.model import load_reward_model

    for kind, load in (("reward", load_reward_model), ("policy", load_policy)):
        folder = _copy(saved_folders, tmp_path, kind)
        _meta(lambda m: m.update(base=base))(folder)
        with pytest.raises(BaseModelError, match=r"(?s)base.*(may name|does not exist)") as err:
            load(folder)
        assert str(folder) in str(err.value)


def test_a_hub_id_base_fails_once_and_fast_without_network(saved_folders, tmp_path, monkeypatch):
    """A saved folder naming a hub id, with no local copy: offline (HF_HUB_OFFLINE) nothing is asked of
    the network; online but unreachable, one request and no retries (transformers retried five times
    per file, about a minute)."""
    import time

    import huggingface_hub
    import transformers

    from rlhf_organic.models import loading
    from rlhf_organic.models.loading import BaseModelError
    from rlhf_organic.reward.model import load_reward_model

    folder = _copy(saved_folders, tmp_path, "reward")
    _meta(lambda m: m.update(base="someorg/no-such-model"))(folder)

    def never(*args, **kwargs):
        raise AssertionError("from_pretrained was called for a hub id the hub cannot serve")

    for auto in (transformers.AutoTokenizer, transformers.AutoModel, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(auto, "from_pretrained", never)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    with pytest.raises(BaseModelError, match=r"someorg/no-such-model.*no local copy.*HF_HUB_OFFLINE"):
        load_reward_model(folder)
    assert time.perf_counter() - started < 5

    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(loading, "_ask_hub", unreachable)
    with pytest.raises(BaseModelError, match=r"someorg/no-such-model.*could not reach the model hub.*Name or service"):
        load_reward_model(folder)
    assert len(calls) == 1


def test_a_local_base_is_saved_as_an_absolute_path(tmp_path, monkeypatch):
    from rlhf_organic.models.folder import base_to_save, saved_base

    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert base_to_save("tiny", "tiny") == "tiny" and base_to_save("owner/name", "tiny") == "owner/name"
    saved = base_to_save("models/m", "tiny")
    assert saved == str(tmp_path / "models" / "m")
    monkeypatch.chdir(tmp_path / "models")  # loaded from another working directory: the same model
    assert saved_base(saved, tmp_path, "tiny", "reward_model.json") == saved


def test_a_saved_folders_flag_is_refused_with_the_switch_of_the_command_at_hand(saved_folders, tmp_path):
    """``reward score`` users were told to set policy.trust_remote_code, a recipe setting they do not have."""
    from click.testing import CliRunner

    from rlhf_organic.cli import main
    from rlhf_organic.models.loading import BaseModelError
    from rlhf_organic.reward.model import load_reward_model

    folder = _copy(saved_folders, tmp_path, "reward")
    _meta(lambda m: m.update(trust_remote_code=True))(folder)
    (tmp_path / "data.jsonl").write_text('{"response": "hi"}\n')
    res = CliRunner().invoke(main, ["reward", "score", str(folder), "--data", str(tmp_path / "data.jsonl"),
                                    "--out", str(tmp_path / "s.parquet"), "-q"])
    assert res.exit_code == 2 and "pass --trust-remote-code" in res.stderr, res.output
    assert "policy.trust_remote_code" not in res.stderr
    with pytest.raises(BaseModelError, match="policy.trust_remote_code"):  # a recipe's run: its setting
        load_reward_model(folder)
