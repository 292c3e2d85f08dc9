"""The read side shared by checkpoints and model versions: signed, versioned Redis hashes.

A store of kind ``k`` keeps each version in the hash ``{prefix}k:{version}``, the kept versions
in the sorted set ``{prefix}k:versions`` and the newest in ``{prefix}k:latest``. Reading
metadata never unpickles anything; :meth:`SignedVersions._fields` is the gate every load goes
through: the version's fields are returned only once their signature verifies.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Generic, TypeVar

from pipeline.checkpointing.trust import CheckpointError, check_signature, how_checked

T = TypeVar("T")


class SignedVersions(Generic[T]):
    """Versions of one pipeline under ``prefix``; subclasses say what is stored and signed."""

    kind: ClassVar[str]  # the key part: "ckpt", "model"
    noun: ClassVar[str]  # how messages name a version: "checkpoint", "model version"
    signed: ClassVar[tuple[bytes, ...]]  # the fields the signature covers, in order

    client: Any
    prefix: str
    secret: bytes | None
    insecure: bool

    def key(self, suffix: str) -> str:
        return self.prefix + suffix

    def where(self, version: int) -> str:
        return f"{self.noun} {self.prefix}{self.kind}:{version}"

    def latest_version(self) -> int | None:
        raw = self.client.get(self.key(f"{self.kind}:latest"))
        return int(raw) if raw is not None else None

    def versions(self) -> list[int]:
        """The kept versions, oldest first."""
        return [int(v) for v in self.client.zrange(self.key(f"{self.kind}:versions"), 0, -1)]

    def meta(self, version: int) -> dict[str, Any] | None:
        """The version's metadata (JSON; nothing unpickled), None if it is not kept."""
        raw = self.client.hget(self.key(f"{self.kind}:{version}"), "meta")
        return json.loads(raw) if raw is not None else None

    def _fields(self, version: int) -> dict[bytes, bytes]:
        """The version's stored fields, after its signature check; nothing is unpickled."""
        fields: dict[bytes, bytes] = self.client.hgetall(self.key(f"{self.kind}:{version}"))
        if not fields:
            raise CheckpointError(f"{self.where(version)} does not exist")
        check_signature(
            self.where(version),
            self.secret,
            self.insecure,
            fields.get(b"sig", b"").decode(),
            *(fields.get(name, b"") for name in self.signed),
        )
        return fields

    def verify(self, version: int) -> str:
        """How the version was checked; :class:`CheckpointError` if it must not be loaded."""
        self._fields(version)
        return how_checked(self.secret)

    def load(self, version: int) -> T:
        raise NotImplementedError

    def load_latest(self) -> T | None:
        version = self.latest_version()
        return self.load(version) if version is not None else None
