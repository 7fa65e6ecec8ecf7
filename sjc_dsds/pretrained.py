"""Loading pretrained weights from a hub id, local folder or file, with one clear error if missing.

Honours the Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`) and `HF_HUB_OFFLINE=1`. Never passes
`trust_remote_code`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sjc_dsds.errors import MissingModelError

T = TypeVar("T")

_TRUTHY = {"1", "true", "yes", "on"}
SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors")


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set now, read at call time."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUTHY
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def is_single_file(model_id: str) -> bool:
    """A model id names one checkpoint file (`.ckpt` or `.safetensors`) rather than a folder."""
    return model_id.lower().endswith(SINGLE_FILE_SUFFIXES)


def is_local(model_id: str) -> bool:
    """A model id names a local folder or file (rather than a hub repository)."""
    return (
        Path(model_id).expanduser().exists()
        or model_id.startswith(("/", "./", "../", "~"))
        or is_single_file(model_id)
    )


def missing_model_message(
    model_id: str, what: str, flag: str, reason: str = "", *, download_args: str = ""
) -> str:
    """One line naming the model, how to download it and the flag for a local copy.

    `download_args` are extra `hf download` options, e.g. include patterns that skip the
    multi-gigabyte single-file checkpoints a diffusers repository also holds.
    """
    tail = f" ({reason})" if reason else ""
    if is_local(model_id):
        return (
            f"{what} '{model_id}' is not a readable local model folder or file{tail}; pass an "
            f"existing folder with {flag} /path/to/model, or a hub id (fetch one with "
            f"`hf download <hub id>`)"
        )
    where = "offline (HF_HUB_OFFLINE is set)" if hub_offline() else "from the Hugging Face hub"
    command = " ".join(part for part in ("hf download", model_id, download_args) if part)
    return (
        f"{what} '{model_id}' is not in the Hugging Face cache and cannot be fetched "
        f"{where}{tail}; download it with `{command}` on a machine with internet (it lands in "
        f"the Hugging Face cache), or pass a local copy with {flag} /path/to/model"
    )


def load_pretrained(
    load: Callable[..., T],
    model_id: str,
    *,
    what: str,
    flag: str,
    revision: str | None = None,
    download_args: str = "",
    **kwargs: Any,
) -> T:
    """Call a `from_pretrained`-style loader; missing weights raise MissingModelError.

    Args:
        load: e.g. `UNet2DConditionModel.from_pretrained` or `AutoTokenizer.from_pretrained`.
        what: human name of the model for the message ("Stable Diffusion").
        flag: the flag that points to a local copy ("--sd.model_id").
        download_args: extra `hf download` options for the message (see missing_model_message).
        kwargs: passed to `load` (subfolder, dtype, ...).
    """
    from huggingface_hub.errors import HFValidationError
    from safetensors import SafetensorError

    def missing(reason: str) -> MissingModelError:
        return MissingModelError(
            missing_model_message(model_id, what, flag, reason, download_args=download_args)
        )

    if is_local(model_id) and not Path(model_id).expanduser().exists():
        raise missing("no such path")
    options = dict(kwargs)
    if revision is not None and not is_local(model_id):
        options["revision"] = revision
    if hub_offline() and not is_local(model_id):
        options["local_files_only"] = True
    try:
        return load(str(Path(model_id).expanduser()) if is_local(model_id) else model_id, **options)
    except HFValidationError:
        raise missing("neither an existing local path nor a valid hub id") from None
    except OSError as error:
        # The hub client and from_pretrained report missing files and offline misses as OSError.
        raise missing(_first_line(error)) from None
    except (ValueError, RuntimeError, KeyError, pickle.UnpicklingError, SafetensorError) as error:
        # Files that exist but hold no readable weights (not tensors, truncated, wrong format).
        raise MissingModelError(
            f"{what} '{model_id}' could not be loaded: its files are not readable weights "
            f"({error.__class__.__name__}: {_first_line(error)}); re-download it or pass another "
            f"copy with {flag}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else error.__class__.__name__
