"""Loading pretrained weights from a hub id or a local folder, with one clear error when missing.

Honours the Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`) and `HF_HUB_OFFLINE=1`. Never passes
`trust_remote_code`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sjc_dsds.errors import MissingModelError

T = TypeVar("T")

_TRUTHY = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set now, read at call time."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUTHY
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def is_local(model_id: str) -> bool:
    """A model id names a local folder or file (rather than a hub repository)."""
    return Path(model_id).expanduser().exists() or model_id.startswith(("/", "./", "../", "~"))


def missing_model_message(model_id: str, what: str, flag: str, reason: str = "") -> str:
    """One line naming the model, how to download it and the flag for a local copy."""
    where = "offline (HF_HUB_OFFLINE is set)" if hub_offline() else "from the Hugging Face hub"
    if is_local(model_id):
        head = f"{what} '{model_id}' is not a readable local model folder or file"
    else:
        head = f"{what} '{model_id}' is not in the Hugging Face cache and cannot be fetched {where}"
    tail = f" ({reason})" if reason else ""
    return (
        f"{head}{tail}; download it with `hf download {model_id}` (or `huggingface-cli download "
        f"{model_id}`) on a machine with internet, or pass a local copy with {flag} /path/to/model"
    )


def load_pretrained(
    load: Callable[..., T],
    model_id: str,
    *,
    what: str,
    flag: str,
    revision: str | None = None,
    **kwargs: Any,
) -> T:
    """Call a `from_pretrained`-style loader; missing weights raise MissingModelError.

    Args:
        load: e.g. `UNet2DConditionModel.from_pretrained` or `AutoTokenizer.from_pretrained`.
        what: human name of the model for the message ("Stable Diffusion").
        flag: the flag that points to a local copy ("--sd.model_id").
    """
    if is_local(model_id) and not Path(model_id).expanduser().exists():
        raise MissingModelError(missing_model_message(model_id, what, flag, "no such path"))
    options = dict(kwargs)
    if revision is not None and not is_local(model_id):
        options["revision"] = revision
    if hub_offline() and not is_local(model_id):
        options["local_files_only"] = True
    try:
        return load(str(Path(model_id).expanduser()) if is_local(model_id) else model_id, **options)
    except OSError as error:
        reason = str(error).splitlines()[0][:200] if str(error) else error.__class__.__name__
        raise MissingModelError(missing_model_message(model_id, what, flag, reason)) from None
