"""The read side shared by checkpoints and model versions: signed, versioned Redis hashes.

A store of kind ``k`` keeps each version in the hash ``{prefix}k:{version}``, the kept versions
in the sorted set ``{prefix}k:versions`` and the newest in ``{prefix}k:latest``. Reading
metadata never unpickles anything; :meth:`SignedVersions._fields` is the gate every load goes
through: the version's fields are returned only once their signature verifies.

Every field read here may hold any bytes (whoever can write Redis chooses them): a pointer, an
index entry or a metadata field that does not parse is a :class:`CheckpointError` naming the
key, handled like any refused version, never an exception that stops the reader.
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
        return None if raw is None else self._version(raw, f"{self.kind}:latest")

    def versions(self) -> list[int]:
        """The kept versions, oldest first."""
        where = f"{self.kind}:versions"
        return [self._version(v, where) for v in self.client.zrange(self.key(where), 0, -1)]

    def _version(self, raw: bytes, where: str) -> int:
        try:
            return int(raw)
        except ValueError:
            raise CheckpointError(
                f"{self.prefix}{where} holds {raw[:40]!r}, not a {self.noun} number"
            ) from None

    def meta(self, version: int) -> dict[str, Any] | None:
        """The version's metadata (JSON; nothing unpickled), None if it is not kept."""
        raw = self.client.hget(self.key(f"{self.kind}:{version}"), "meta")
        return None if raw is None else self.parse_meta(version, raw)

    def parse_meta(self, version: int, raw: bytes) -> dict[str, Any]:
        """A stored ``meta`` field as a mapping; :class:`CheckpointError` if it is not one."""
        try:
            meta = json.loads(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError alike
            raise CheckpointError(
                f"{self.where(version)} has unreadable metadata ({type(e).__name__})"
            ) from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{self.where(version)} has metadata that is not a mapping")
        return meta

    def _fields(self, version: int) -> dict[bytes, bytes]:
        """The version's stored fields, after its signature check; nothing is unpickled."""
        fields: dict[bytes, bytes] = self.client.hgetall(self.key(f"{self.kind}:{version}"))
        if not fields:
            raise CheckpointError(f"{self.where(version)} does not exist")
        check_signature(
            self.where(version),
            self.secret,
            self.insecure,
            fields.get(b"sig", b""),  # bytes as stored: never decoded before the check
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
