"""Whether the hub may be contacted (offline mode) and whether it answers at all (a quick TCP probe): one rule for
model snapshots, training datasets and evaluation tasks, so each fails in seconds for the same reasons."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

REACH_TIMEOUT_S = 3.0
"""How long a TCP connection to the hub endpoint may take to open before the hub counts as unreachable."""
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def hub_offline() -> bool:
    """Whether the hub must not be contacted (`HF_HUB_OFFLINE=1`, read now as well as by huggingface_hub)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.is_offline_mode() or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    """The Hugging Face Hub's address: `$HF_ENDPOINT` as set now, else huggingface_hub's."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def endpoint_address(url: str) -> tuple[str, int]:
    """The host and TCP port behind `url`: its explicit port, else 443 for https and 80 for http."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)


def hub_reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint opens; behind a proxy we cannot tell, so assume yes."""
    if any(os.environ.get(name) for name in _PROXIES):
        return True
    try:
        socket.create_connection(endpoint_address(hub_endpoint()), timeout).close()
    except OSError:
        return False
    return True
