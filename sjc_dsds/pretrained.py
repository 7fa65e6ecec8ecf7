"""Loading pretrained weights from a hub id, local folder or file, with one clear error if missing.

Honours the Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`) and `HF_HUB_OFFLINE=1`. Never passes
`trust_remote_code`.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sjc_dsds.errors import MissingModelError

T = TypeVar("T")

logger = logging.getLogger(__name__)

_TRUTHY = {"1", "true", "yes", "on"}
SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors")


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set now, read at call time."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUTHY
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_endpoint() -> str:
    """The hub URL the Hugging Face clients use (HF_ENDPOINT, read when huggingface_hub loads)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_unreachable_reason(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be reached (a failed TCP connect to its endpoint), or None if it can.

    With a proxy configured a direct connect proves nothing, so that case counts as reachable.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    url = urlsplit(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout_s).close()
    except OSError as error:
        return f"{error.__class__.__name__}: {error}"
    return None


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` or an error it was raised from is a failed connection to a server."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return False
        name = seen.__class__.__name__
        if isinstance(seen, ConnectionError) or name in _CONNECTION_ERROR_NAMES:
            return True
        if "couldn't connect" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
_PROXY_VARIABLES += ("all_proxy",)
# requests, urllib3 and httpx name their connection failures these (not ConnectionError).
_CONNECTION_ERROR_NAMES = {"ConnectError", "ConnectTimeout", "NewConnectionError"}
_CONNECTION_ERROR_NAMES |= {"MaxRetryError", "NameResolutionError", "ConnectTimeoutError"}


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
    model_id: str,
    what: str,
    flag: str,
    reason: str = "",
    *,
    download_args: str = "",
    unreachable: bool = False,
) -> str:
    """One line naming the model, how to download it and the flag for a local copy.

    `download_args` are extra `hf download` options, e.g. include patterns that skip the
    multi-gigabyte single-file checkpoints a diffusers repository also holds. `unreachable`:
    the hub could not be reached, so the line says so and suggests HF_HUB_OFFLINE=1.
    """
    tail = f" ({reason})" if reason else ""
    if is_local(model_id):
        return (
            f"{what} '{model_id}' is not a readable local model folder or file{tail}; pass an "
            f"existing folder with {flag} /path/to/model, or a hub id (fetch one with "
            f"`hf download <hub id>`)"
        )
    command = " ".join(part for part in ("hf download", model_id, download_args) if part)
    advice = (
        f"download it with `{command}` on a machine with internet (it lands in the Hugging Face "
        f"cache), or pass a local copy with {flag} /path/to/model"
    )
    if unreachable:
        return (
            f"{what} '{model_id}' is not in the Hugging Face cache and the Hugging Face hub "
            f"({hub_endpoint()}) cannot be reached: no network?{tail}; {advice}; without a "
            f"network, set HF_HUB_OFFLINE=1 so that only the cache is searched"
        )
    where = "offline (HF_HUB_OFFLINE is set)" if hub_offline() else "from the Hugging Face hub"
    return (
        f"{what} '{model_id}' is not in the Hugging Face cache and cannot be fetched "
        f"{where}{tail}; {advice}"
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

    def missing(reason: str, unreachable: bool = False) -> MissingModelError:
        message = missing_model_message(
            model_id, what, flag, reason, download_args=download_args, unreachable=unreachable
        )
        return MissingModelError(message)

    if is_local(model_id) and not Path(model_id).expanduser().exists():
        raise missing("no such path")
    options = dict(kwargs)
    unreachable = None
    if not is_local(model_id):
        if revision is not None:
            options["revision"] = revision
        if not hub_offline():
            unreachable = hub_unreachable_reason()
        if hub_offline() or unreachable:
            # Unreachable hub: look in the cache only, instead of minutes of retries per file.
            options["local_files_only"] = True
    if unreachable:
        logger.warning("the Hugging Face hub cannot be reached (%s); using the cache", unreachable)
    try:
        return load(str(Path(model_id).expanduser()) if is_local(model_id) else model_id, **options)
    except HFValidationError:
        raise missing("neither an existing local path nor a valid hub id") from None
    except OSError as error:
        # The hub client and from_pretrained report missing files and offline misses as OSError;
        # their text ("does not appear to have a file named ...") hides a missing network.
        if unreachable:
            raise missing(unreachable, unreachable=True) from None
        if not hub_offline() and not is_local(model_id) and is_connection_error(error):
            raise missing(_first_line(error), unreachable=True) from None
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
