"""What made a model version or a checkpoint: the code, the config, the data consumed.

Pure: no I/O. The digests are SHA-256 over the effective config as canonical JSON, so two
processes with the same settings (from whatever mix of file, environment and flags) agree, and
secrets never enter them: ``checkpoint.secret``, a password in ``redis.url`` and credential-like
``kafka.client_options`` are left out.

>>> from pipeline.config import load_config
>>> cfg = load_config(None, {"name": "doc", "fallback": {"default": False}}, environ={})
>>> signed = load_config(None, {"name": "doc", "fallback": {"default": False},
...     "checkpoint": {"secret": "s3cret"}, "redis": {"url": "redis://:pw@127.0.0.1:6379/0"}},
...     environ={})
>>> config_digest(cfg) == config_digest(signed)  # secrets do not count
True
>>> p = provenance(cfg, {("doc.events", 0): 42, ("doc.labels", 0): 40}, created_at=0.0)
>>> p["offsets"], p["model_spec"] == cfg.model.spec, len(p["config_digest"])
({'doc.events[0]': 42, 'doc.labels[0]': 40}, True, 64)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipeline.config import RiverlineConfig

# The keys provenance() adds to a checkpoint's or a model version's metadata.
PROVENANCE_KEYS = (
    "riverline",
    "model_spec",
    "metric",
    "config_digest",
    "fallback_digest",
    "offsets",
    "created_at",
)

# Kafka client options that carry credentials (sasl_plain_password, sasl.jaas.config, ...).
_CREDENTIAL = re.compile(r"pass|secret|jaas|token|credential|key", re.IGNORECASE)


@functools.cache
def riverline_version() -> str:
    """The installed package's version (the source tree's when not installed).

    Read once per process (the code running does not change with the installed package), not
    at every checkpoint: the metadata lookup scans sys.path, ~0.7 ms.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("riverline")
    except PackageNotFoundError:
        from pipeline import __version__

        return __version__


def redacted_url(url: str) -> str:
    """A Redis URL without its password (in the user part or the query).

    >>> redacted_url("redis://user:pw@host:6379/0?password=pw&db=1")
    'redis://user@host:6379/0?db=1'
    >>> redacted_url("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{host}" if user else host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def effective_config(config: RiverlineConfig) -> dict[str, Any]:
    """The config as plain JSON values, secrets left out."""
    data = config.model_dump(mode="json")
    data["checkpoint"].pop("secret", None)
    data["redis"]["url"] = redacted_url(config.redis.url)
    options = data["kafka"]["client_options"]
    data["kafka"]["client_options"] = {
        k: v for k, v in options.items() if not _CREDENTIAL.search(k)
    }
    return data


def digest(value: Any) -> str:
    """SHA-256 hex of a JSON value in canonical form (sorted keys, no spaces).

    >>> digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def config_digest(config: RiverlineConfig) -> str:
    """Digest of the effective config, secrets excluded."""
    return digest(effective_config(config))


def fallback_digest(config: RiverlineConfig) -> str:
    """Digest of the fallback chain: two processes with equal digests answer alike without
    the model (the callable is named, not hashed: its code is the deployment's business).

    >>> from pipeline.config import load_config
    >>> a = load_config(None, {"fallback": {"default": False}}, environ={})
    >>> b = load_config(None, {"fallback": {"default": True}}, environ={})
    >>> fallback_digest(a) == fallback_digest(b)
    False
    """
    return digest(config.fallback.model_dump(mode="json"))


def offsets_by_name(offsets: Mapping[tuple[str, int], int]) -> dict[str, int]:
    """``{("t", 0): 5}`` -> ``{"t[0]": 5}``: the next offset to read, per partition."""
    return {f"{t}[{p}]": int(o) for (t, p), o in sorted(offsets.items())}


def provenance(
    config: RiverlineConfig,
    offsets: Mapping[tuple[str, int], int],
    created_at: float | None = None,
) -> dict[str, Any]:
    """Code, config and data behind a checkpoint or model version, as plain JSON values.

    For a checkpoint's metadata: ``meta.update(provenance(config, offsets))``.
    """
    return {
        "riverline": riverline_version(),
        "model_spec": config.model.spec,
        "metric": config.evaluation.metric,
        "config_digest": config_digest(config),
        "fallback_digest": fallback_digest(config),
        "offsets": offsets_by_name(offsets),
        "created_at": time.time() if created_at is None else created_at,
    }


def provenance_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance fields a metadata dict carries (none for one written before them).

    >>> provenance_of({"reason": "periodic", "riverline": "0.1.0", "metric": "Accuracy"})
    {'riverline': '0.1.0', 'metric': 'Accuracy'}
    """
    return {k: meta[k] for k in PROVENANCE_KEYS if k in meta}
