"""Hugging Face Hub ids (e.g. `Davlan/afro-xlmr-large`): know at once whether the Hub can be reached.

Without a network, huggingface_hub retries every request five times with back-off (about half a
minute, a log line each time) before transformers gives up. `check_hub_id` runs before the first
request for an id: it opens one TCP connection to the Hub (or the proxy) with a short timeout,
once per process. When that fails, huggingface_hub's offline mode is turned on, so files already in
its cache load at once and nothing retries, and an id that is not in the cache is one error line
saying that this machine has no network.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

from afrocomet.errors import AfroCometError

PROBE_SECONDS = 3.0
PROXY_ENV = {"https": ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"),
             "http": ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")}
CACHED_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json")


def _address() -> tuple[str, int]:
    """(host, port) a request to the Hub connects to first: the proxy if one is set, else the endpoint."""
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    names = PROXY_ENV["http" if endpoint.scheme == "http" else "https"]
    proxy = next((os.environ[name] for name in names if os.environ.get(name)), None)
    url = urlparse(proxy) if proxy else endpoint
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


@functools.lru_cache(maxsize=None)
def _probe() -> str | None:
    """Why the Hub cannot be reached (None: it can), probed once per process."""
    host, port = _address()
    failure: list[str] = ["no answer"]

    def probe() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            failure.clear()
        except OSError as exc:
            failure[0] = exc.strerror or str(exc)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    if thread.is_alive() or failure:
        why = failure[0] if failure else "no answer"
        return f"this machine has no network ({host}:{port} cannot be reached: {why})"
    return None


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for name in CACHED_FILES:
        try:
            if isinstance(try_to_load_from_cache(repo_id, name), str):
                return True
        except (ValueError, OSError):  # not a valid repo id: transformers says what is wrong with it
            return False
    return False


def check_hub_id(repo_id: str) -> None:
    """Before the first request for the Hub id `repo_id`: when the Hub cannot be reached, switch to
    offline mode (cached files still load, nothing retries) and fail at once, in one line, if the
    id is not in the Hugging Face cache either."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    else:
        reason = _probe()
        if reason is None:
            return
        constants.HF_HUB_OFFLINE = True  # read at every request (huggingface_hub.is_offline_mode)
        os.environ["HF_HUB_OFFLINE"] = "1"  # and in processes started from here (accelerate launch)
    if not _cached(repo_id):
        raise AfroCometError(f"{repo_id!r} is not a folder here and could not be downloaded: {reason}, and it is "
                             "not in the Hugging Face cache; pass a local folder (config.json, model.safetensors, "
                             "tokenizer files) or run once where the Hub can be reached")
