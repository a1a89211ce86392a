"""Piping UI's key exchange ("passwordless" E2E, key exchange version 4), the pure part: no I/O.

Both sides sign a payload (their ECDH P-256 public key and a random "main path factor") with an
ECDSA P-384 key, exchange it on two paths derived from the secret path, and derive:

* the key: the 32-byte ECDH shared secret; OpenPGP.js is given it as ``Uint8Array.toString()``
  ("12,255,...") for a passphrase, so that string is :func:`passphrase_of` the key;
* the main path (where the data goes) from both factors;
* the verification code (both users compare it) from both signing keys' JWK thumbprints.

docs/key-exchange.md says which line of Piping UI 0.17 each step follows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ._errors import PipingError

__all__ = [
    "KEY_EXCHANGE_VERSION",
    "ExchangeError",
    "Exchanged",
    "Party",
    "Role",
    "derive",
    "exchange_paths",
    "passphrase_of",
    "verification_code",
    "verified_parcel",
    "verified_path",
    "read_verified_parcel",
]

KEY_EXCHANGE_VERSION = 4
FORMAT = "piping_ui_auth"
Role = Literal["sender", "receiver"]

#: A parcel is a few hundred bytes; anything much larger is not one (and is not read further).
MAX_PARCEL_BYTES = 64 * 1024


class ExchangeError(PipingError):
    """The peer's key-exchange message is unusable (format, version, signature) or says no."""

    exit_code = 6


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _public_jwk(key: ec.EllipticCurvePublicKey, crv: str, size: int, key_ops: list[str]) -> dict[str, Any]:
    """A public key as WebCrypto's exportKey('jwk') gives it."""
    numbers = key.public_numbers()
    return {
        "crv": crv,
        "ext": True,
        "key_ops": key_ops,
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(size, "big")),
        "y": _b64url(numbers.y.to_bytes(size, "big")),
    }


def _import_jwk(jwk: object, crv: str, curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != crv:
        raise ExchangeError(f"the peer's key is not an EC {crv} key")
    try:
        x = int.from_bytes(_unb64url(str(jwk["x"])), "big")
        y = int.from_bytes(_unb64url(str(jwk["y"])), "big")
        # public_key() checks that the point is on the curve (no invalid-curve tricks).
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    except (KeyError, ValueError, binascii.Error):
        raise ExchangeError(f"the peer's {crv} key is not a valid public key") from None


def jwk_thumbprint_hex(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of an EC JWK, in hex (what the jwk-thumbprint package computes)."""
    canonical = {"crv": jwk.get("crv"), "kty": jwk.get("kty"), "x": jwk.get("x"), "y": jwk.get("y")}
    return _sha256_hex(json.dumps(canonical, separators=(",", ":"), ensure_ascii=False))


def verification_code(signing_jwk_a: dict[str, Any], signing_jwk_b: dict[str, Any]) -> str:
    """The 32 hex digits both users compare: the same on both sides, whichever order."""
    thumbs = sorted([jwk_thumbprint_hex(signing_jwk_a), jwk_thumbprint_hex(signing_jwk_b)])
    return _sha256_hex("-".join(thumbs))[:32]


def main_path(factor_a: str, factor_b: str) -> str:
    digest = hashlib.sha256("-".join(sorted([factor_a, factor_b])).encode("utf-8")).digest()
    return _b64url(digest[:16])


def exchange_paths(role: Role, secret_path: str) -> tuple[str, str]:
    """(where this side POSTs its parcel, where it GETs the peer's), relative to the server."""
    sender, receiver = secret_path, f"{secret_path}/receiver-sender"
    return (sender, receiver) if role == "sender" else (receiver, sender)


def verified_path(main: str) -> str:
    """Where the sender POSTs the (encrypted) verified parcel."""
    return _sha256_hex(f"{main}/verified")


def passphrase_of(key: bytes) -> str:
    """The OpenPGP passphrase Piping UI uses for ``key``: JavaScript's ``Uint8Array.toString()``."""
    return ",".join(str(b) for b in key)


@dataclass(frozen=True)
class Exchanged:
    key: bytes
    main_path: str
    verification_code: str


class Party:
    """One side of one exchange: a signing key (per process in Piping UI: per page) and an ECDH key."""

    def __init__(self, signing_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self._signing = signing_key or ec.generate_private_key(ec.SECP384R1())
        self._ecdh = ec.generate_private_key(ec.SECP256R1())
        self.signing_jwk = _public_jwk(self._signing.public_key(), "P-384", 48, ["verify"])
        self.factor = hashlib.sha256(os.urandom(32)).hexdigest()

    def parcel(self) -> bytes:
        """The message this side POSTs (JSON indented by 2, as Piping UI does for curl users to see)."""
        encrypt_jwk = _public_jwk(self._ecdh.public_key(), "P-256", 32, [])
        body = {"public_encrypt_jwk": encrypt_jwk, "main_path_factor": self.factor}
        payload = json.dumps(body, separators=(",", ":"))
        der = self._signing.sign(payload.encode("utf-8"), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        # WebCrypto signatures are r || s, each 48 bytes for P-384 (IEEE P1363), not DER.
        raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        parcel = {
            "format": FORMAT,
            "version": KEY_EXCHANGE_VERSION,
            "public_signing_jwk": self.signing_jwk,
            "payload": payload,
            "signature": base64.b64encode(raw).decode("ascii"),
        }
        return json.dumps(parcel, indent=2).encode("utf-8")

    def derive(self, peer_parcel: bytes) -> Exchanged:
        """Check the peer's parcel and derive the key, main path and verification code."""
        return derive(self, peer_parcel)


def _parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ExchangeError(f"the peer's {what} is not JSON: is a Piping UI key exchange on the other side?") from None


def derive(me: Party, peer_parcel: bytes) -> Exchanged:
    parcel = _parse_json(peer_parcel, "key-exchange message")
    fmt = parcel.get("format") if isinstance(parcel, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("piping_") or not isinstance(parcel.get("version"), int | float):
        raise ExchangeError("the peer's message is not a Piping UI key exchange")
    if parcel["version"] != KEY_EXCHANGE_VERSION:
        raise ExchangeError(
            f"the peer speaks key exchange version {parcel['version']}, this client {KEY_EXCHANGE_VERSION}:"
            " update the older one"
        )
    payload, signature, signing_jwk = parcel.get("payload"), parcel.get("signature"), parcel.get("public_signing_jwk")
    if not isinstance(payload, str) or not isinstance(signature, str) or not isinstance(signing_jwk, dict):
        raise ExchangeError("the peer's key-exchange message lacks its payload, signature or signing key")
    verifier = _import_jwk(signing_jwk, "P-384", ec.SECP384R1())
    try:
        raw = base64.b64decode(signature, validate=True)
        if len(raw) != 96:
            raise ValueError
        der = encode_dss_signature(int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big"))
        verifier.verify(der, payload.encode("utf-8"), ec.ECDSA(hashes.SHA384()))
    except (ValueError, binascii.Error, InvalidSignature):
        raise ExchangeError("the peer's key-exchange payload is not signed by its key") from None
    body = _parse_json(payload.encode("utf-8"), "key-exchange payload")
    factor = body.get("main_path_factor") if isinstance(body, dict) else None
    if not isinstance(factor, str):
        raise ExchangeError("the peer's key-exchange payload has no main path factor")
    peer_ecdh = _import_jwk(body.get("public_encrypt_jwk"), "P-256", ec.SECP256R1())
    key = me._ecdh.exchange(ec.ECDH(), peer_ecdh)
    return Exchanged(key, main_path(me.factor, factor), verification_code(me.signing_jwk, signing_jwk))


def verified_parcel(verified: bool, data_meta: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> bytes:
    """The sender's confirmation (JSON; encrypted by the caller). ``None`` members are left out, as
    JSON.stringify leaves out ``undefined``."""
    meta = {k: v for k, v in (data_meta or {}).items() if v is not None}
    extension: dict[str, Any] = {"version": 2, "data_meta": meta}
    if extra:
        extension.update(extra)  # Piping UI's schema ignores members it does not know
    return json.dumps({"verified": verified, "extension": extension}, separators=(",", ":")).encode("utf-8")


def read_verified_parcel(plain: bytes) -> tuple[bool, dict[str, Any]]:
    """(verified, extension) of a decrypted verified parcel; a bad extension is an empty one (as Piping UI)."""
    parcel = _parse_json(plain, "confirmation")
    if not isinstance(parcel, dict) or not isinstance(parcel.get("verified"), bool):
        raise ExchangeError("the peer's confirmation is not a Piping UI verified message")
    extension = parcel.get("extension")
    return parcel["verified"], extension if isinstance(extension, dict) else {}
