"""The signature check refuses every kind of hostile signature field with one error class.

Anyone who can write Redis can put any bytes in a version's ``sig`` field; a signature that is
not ASCII, or not even UTF-8, must be refused like any other wrong signature (a
:class:`CheckpointError` the caller handles), never raise something else that stops a process.
"""

from __future__ import annotations

import pytest

from pipeline.checkpointing.trust import CheckpointError, check_signature, sign

SECRET = b"k" * 32
PARTS = (b"blob", b"{}")

HOSTILE = {
    "non-ascii text": "é" * 64,
    "non-ascii utf-8 bytes": ("é" * 32).encode(),
    "invalid utf-8 bytes": b"\xff\xfe" * 32,
    "nul bytes": b"\x00" * 64,
    "right hex, one byte extra": sign(SECRET, *PARTS).encode() + b"\xff",
}


@pytest.mark.parametrize("signature", HOSTILE.values(), ids=list(HOSTILE))
def test_a_hostile_signature_is_refused_like_a_wrong_one(signature: str | bytes) -> None:
    with pytest.raises(CheckpointError, match="failed its signature check"):
        check_signature("model version 3", SECRET, False, signature, *PARTS)


@pytest.mark.parametrize("encode", [False, True], ids=["str", "bytes"])
def test_the_right_signature_passes_as_text_or_bytes(encode: bool) -> None:
    signature = sign(SECRET, *PARTS)
    stored = signature.encode() if encode else signature
    check_signature("model version 3", SECRET, False, stored, *PARTS)


def test_an_empty_signature_is_unsigned() -> None:
    with pytest.raises(CheckpointError, match="is not signed"):
        check_signature("model version 3", SECRET, False, b"", *PARTS)
