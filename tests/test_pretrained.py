"""pretrained.py: hub ids vs local paths, offline and revision options, missing-model errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sjc_dsds.errors import MissingModelError
from sjc_dsds.pretrained import (
    hub_offline,
    is_local,
    is_single_file,
    load_pretrained,
    missing_model_message,
)

FLAG = "--x.model_id"


def _record(calls: list) -> object:
    def load(model_id: str, **kwargs: object) -> str:
        calls.append((model_id, kwargs))
        return "loaded"

    return load


def test_hub_offline_reads_the_environment_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    assert not hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "True")
    assert hub_offline()


def test_local_paths_and_single_files_are_not_hub_ids(tmp_path: Path) -> None:
    assert is_local(str(tmp_path)) and is_local("./model") and is_local("~/sd")
    assert is_local("sd-v1-5.ckpt") and is_single_file("weights/model.SAFETENSORS")
    assert not is_local("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert not is_single_file(str(tmp_path))


def test_hub_ids_get_revision_and_offline_flag_local_folders_do_not(tmp_path: Path) -> None:
    calls: list = []
    load_pretrained(_record(calls), "org/model", what="M", flag=FLAG, revision="v2", subfolder="u")
    load_pretrained(_record(calls), str(tmp_path), what="M", flag=FLAG, revision="v2")
    # The autouse fixture sets HF_HUB_OFFLINE=1.
    assert calls[0] == ("org/model", {"subfolder": "u", "revision": "v2", "local_files_only": True})
    assert calls[1] == (str(tmp_path), {})


def test_loader_oserror_becomes_one_line_missing_model_error() -> None:
    def load(model_id: str, **kwargs: object) -> None:
        raise OSError(f"{model_id} does not appear to have a file named config.json.\nmore text")

    with pytest.raises(MissingModelError) as caught:
        load_pretrained(load, "org/model", what="Thing", flag=FLAG, download_args="--include a")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("Thing 'org/model' is not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE" in message and "config.json" in message
    assert "`hf download org/model --include a`" in message and f"{FLAG} /path/to/model" in message


def test_invalid_hub_id_is_a_missing_model_error_not_a_traceback() -> None:
    from huggingface_hub import hf_hub_download

    with pytest.raises(MissingModelError, match="a/b/c.*neither an existing local path"):
        load_pretrained(hf_hub_download, "a/b/c", what="M", flag=FLAG, filename="config.json")


def test_missing_local_path_message_names_path_and_flag_without_download_of_a_path(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "absent")
    with pytest.raises(MissingModelError) as caught:
        load_pretrained(_record([]), missing, what="M", flag=FLAG)
    message = str(caught.value)
    assert f"'{missing}'" in message and "no such path" in message and FLAG in message
    assert f"hf download {missing}" not in message


def test_message_online_says_it_could_not_be_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    message = missing_model_message("org/model", "M", FLAG, "timed out")
    assert "cannot be fetched from the Hugging Face hub (timed out)" in message


# Run in a fresh process: huggingface_hub reads HF_HOME once, at import.
_CACHE_PROBE = """
import sys, torch
from sjc_dsds.config import SDConfig
from sjc_dsds.errors import MissingModelError
from sjc_dsds.stable_diffusion import StableDiffusionDenoiser
cpu = torch.device("cpu")
hub = StableDiffusionDenoiser.from_config(SDConfig(model_id="tiny-org/tiny-sd"), cpu)
folder = StableDiffusionDenoiser.from_config(SDConfig(model_id=sys.argv[1]), cpu)
noised = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
same = torch.equal(
    hub.denoise(noised, 2.0, hub.condition("a bun")),
    folder.denoise(noised, 2.0, folder.condition("a bun")),
)
print("same" if same else "different")
try:
    StableDiffusionDenoiser.from_config(SDConfig(model_id="tiny-org/other"), cpu)
except MissingModelError as error:
    print(error)
"""


def test_hub_id_resolves_from_hf_home_cache_offline(tiny_sd_dir: Path, tmp_path: Path) -> None:
    """A hub id in $HF_HOME's cache loads offline, with the same weights as the local folder."""
    revision = "0" * 40
    repo = tmp_path / "hf_home" / "hub" / "models--tiny-org--tiny-sd"
    shutil.copytree(tiny_sd_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
    }
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", _CACHE_PROBE, str(tiny_sd_dir)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = result.stdout.strip().splitlines()[-2:]
    assert first == "same"
    assert second.startswith("Stable Diffusion model 'tiny-org/other' is not in the Hugging Face")
    assert "`hf download tiny-org/other " in second and "--sd.model_id" in second


UNREACHABLE_ENDPOINT = "http://127.0.0.1:9"  # the discard port: connection refused, local only


def _online_but_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE_ENDPOINT)


def test_unreachable_hub_is_named_and_hf_hub_offline_suggested(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download

    _online_but_unreachable(monkeypatch)
    with pytest.raises(MissingModelError) as caught:
        load_pretrained(
            hf_hub_download,
            "nobody/missing-model",
            what="Thing",
            flag=FLAG,
            filename="config.json",
            cache_dir=str(tmp_path),
        )
    message = str(caught.value)
    assert "\n" not in message and "does not appear to have a file" not in message
    assert f"hub ({UNREACHABLE_ENDPOINT}) cannot be reached" in message
    assert "set HF_HUB_OFFLINE=1" in message and "Connection refused" in message
    assert "`hf download nobody/missing-model`" in message and f"{FLAG} /path/to/model" in message


def test_unreachable_hub_asks_the_loader_for_the_cache_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A cached model still loads without the hub, and without minutes of retries per file.
    _online_but_unreachable(monkeypatch)
    calls: list = []
    assert load_pretrained(_record(calls), "org/model", what="M", flag=FLAG) == "loaded"
    assert calls == [("org/model", {"local_files_only": True})]


def test_connection_error_behind_a_loader_error_is_reported_as_no_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With a proxy the direct connect test cannot tell; the loader's error chain still can.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")

    def load(model_id: str, **kwargs: object) -> None:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as error:
            raise OSError(f"{model_id} does not appear to have a file named config.json") from error

    with pytest.raises(
        MissingModelError, match=r"cannot be reached: no network\?.*HF_HUB_OFFLINE=1"
    ):
        load_pretrained(load, "org/model", what="M", flag=FLAG)
    # A plain missing file with a working network keeps the ordinary message.
    monkeypatch.setattr("sjc_dsds.pretrained.hub_unreachable_reason", lambda: None)

    def absent(model_id: str, **kwargs: object) -> None:
        raise OSError(f"{model_id} does not appear to have a file named config.json")

    with pytest.raises(MissingModelError) as caught:
        load_pretrained(absent, "org/model", what="M", flag=FLAG)
    assert "cannot be fetched from the Hugging Face hub" in str(caught.value)
    assert "cannot be reached" not in str(caught.value)


def test_unreachable_hf_endpoint_end_to_end(tmp_path: Path) -> None:
    # HF_ENDPOINT is read when huggingface_hub is imported: a fresh process with it set.
    code = (
        "from huggingface_hub import hf_hub_download\n"
        "from sjc_dsds.pretrained import load_pretrained\n"
        "load_pretrained(hf_hub_download, 'nobody/missing-model', what='M', flag='--m',"
        " filename='config.json')\n"
    )
    env = {**os.environ, "HF_ENDPOINT": UNREACHABLE_ENDPOINT, "HF_HOME": str(tmp_path)}
    env.update(HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sjc_dsds.errors.MissingModelError: M 'nobody/missing-model'")
    assert f"({UNREACHABLE_ENDPOINT}) cannot be reached" in last and "HF_HUB_OFFLINE=1" in last
