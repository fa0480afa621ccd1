"""Signatures over drivers, compatible with cosign's key pairs: ECDSA P-256 with SHA-256, DER, base64.

What is signed is the caller's business: the simple-signing payload of an OCI artifact (`cosign sign`), or a
driver file's bytes for a detached `<file>.sig` (`cosign sign-blob`). Both are ECDSA over the SHA-256 of the bytes:
cosign hashes the message with SHA-256 and signs the 32-byte digest (`ecdsa.SignASN1`), which is exactly what
ECDSA-SHA256 does (P-256's order is 256 bits, so the digest is used whole); `openssl dgst -sha256 -sign/-verify`
computes the same. A large file whose SHA-256 is already known is checked from that digest (`verify_file_digest`),
without reading it again.

Keys (only ECDSA P-256: anything else is refused by name):
- public: PEM SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----` (cosign.pub, `openssl pkey -pubout`);
- private: PEM PKCS#8 (`PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`, optionally with
  OpenSSL's `Proc-Type: 4,ENCRYPTED`), and cosign's own `ENCRYPTED SIGSTORE PRIVATE KEY` (or the older
  `ENCRYPTED COSIGN PRIVATE KEY`): a JSON document from go-securesystemslib's `encrypted` package, whose scrypt key
  (N 2^15, 2^16 or 2^17, r 8, p 1 only, as there) opens a NaCl secretbox (XSalsa20-Poly1305) holding a PKCS#8 DER
  key. That format needs PyNaCl (python3-nacl), imported only when such a key is read: signing happens on builders,
  and verifying needs only `cryptography`.

`cryptography` itself is imported on first use, so importing this module costs nothing and works where the library
is missing (the single-file build): there, using a key is a `SignatureUnavailable` (exit 2) that names the package.

Errors: an unusable key file given by the operator is a `UsageError` (exit 2); a signature that is required but
missing or wrong is a `SignatureError` (a `VerificationError`, exit 4) naming the key id and the digest. `verify`
and `verify_file_digest` never raise for bad signatures, only return False; a `TypeError` or `ValueError` from them
is a caller's bug (a wrong type, a malformed digest).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

from driver_loader.core.errors import UsageError, VerificationError
from driver_loader.core.settings import Settings
from driver_loader.system.files import UnreadableFile, read_regular_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey

# A P-256 key file is a few hundred bytes (cosign.key about 650); anything near this is not a key.
KEY_FILE_LIMIT = 64 * 1024
# A DER ECDSA P-256 signature is at most 72 bytes, 96 in base64; the text may carry a trailing newline.
SIGNATURE_TEXT_LIMIT = 1024
KEY_ID_LENGTH = 16
CURVE_NAME = "secp256r1"

COSIGN_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
# go-securesystemslib encrypted.go: the only scrypt parameters it accepts (legacy, standard, OWASP); anything else
# could make the key derivation take any time and memory.
COSIGN_SCRYPT_PARAMS = ({"N": 32768, "r": 8, "p": 1}, {"N": 65536, "r": 8, "p": 1}, {"N": 131072, "r": 8, "p": 1})
_SECRETBOX_KEY_SIZE = 32
_SECRETBOX_NONCE_SIZE = 24
_SECRETBOX_MAC_SIZE = 16

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_PEM_BEGIN = re.compile(r"-----BEGIN ")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_WHITESPACE = " \t\r\n"

_PUBLIC_HINT = ("give the ECDSA P-256 public key in PEM (the cosign.pub that `cosign generate-key-pair` writes, or "
                "`openssl pkey -in KEY -pubout`)")
_PRIVATE_HINT = ("give an ECDSA P-256 private key in PEM: cosign.key from `cosign generate-key-pair`, or "
                 "`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`")


class SignatureUnavailable(UsageError):
    """A library that signatures need is not installed: `cryptography`, or PyNaCl for a cosign.key."""


class SignatureError(VerificationError):
    """A valid signature by `key_id` over `digest` was required and is missing (`missing`) or does not verify.

    `where` says where the signature was looked for (an OCI tag, a `.sig` URL or file) and `detail` what was wrong
    with it, when there was one."""

    def __init__(self, public_key: PublicKey, digest: str, *, missing: bool, where: str = "",
                 detail: str = "") -> None:
        digest = _digest_text(digest)
        kid = public_key.key_id
        place = f" ({where})" if where else ""
        if missing:
            message = f"{digest} has no signature{place}, and a signature by key {kid} is required"
            hint = (f"publish it signed with the key that pairs with key {kid} (falco-driver-loader publish "
                    f"--sign-key, cosign sign or cosign sign-blob), or point --verify-key at the builder's key")
        else:
            reason = f": {detail}" if detail else ""
            message = f"the signature of {digest}{place} is not valid for key {kid}{reason}"
            hint = (f"it was made by another key or the artifact changed after signing: check that --verify-key is "
                    f"the builder's public key (key id {kid}), and publish the artifact again, signed")
        super().__init__(message, hint=hint)
        self.key_id = kid
        self.digest = digest
        self.missing = missing
        self.where = where


@dataclasses.dataclass(frozen=True)
class PublicKey:
    """An ECDSA P-256 public key. `source` names where it came from (a path), for messages."""

    key: EllipticCurvePublicKey = dataclasses.field(repr=False, compare=False)
    spki_der: bytes = dataclasses.field(repr=False)
    source: str = dataclasses.field(compare=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, 64 hex digits."""
        return hashlib.sha256(self.spki_der).hexdigest()

    @property
    def key_id(self) -> str:
        return self.fingerprint[:KEY_ID_LENGTH]

    def pem(self) -> bytes:
        """The key as cosign.pub holds it."""
        body = base64.encodebytes(self.spki_der).replace(b"\n", b"")
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        return b"-----BEGIN PUBLIC KEY-----\n" + b"\n".join(lines) + b"\n-----END PUBLIC KEY-----\n"


@dataclasses.dataclass(frozen=True)
class PrivateKey:
    """An ECDSA P-256 private key and its public half. Its repr shows only where it came from and the key id."""

    key: EllipticCurvePrivateKey = dataclasses.field(repr=False, compare=False)
    public_key: PublicKey
    source: str = dataclasses.field(compare=False)

    @property
    def key_id(self) -> str:
        return self.public_key.key_id


def key_id(public_key: PublicKey) -> str:
    """The key's short fingerprint: the first 16 hex digits of the SHA-256 of its DER SubjectPublicKeyInfo (for
    messages and records; checking a signature always uses the whole key)."""
    if not isinstance(public_key, PublicKey):
        raise TypeError(f"key_id expects a PublicKey, not {type(public_key).__name__}")
    return public_key.key_id


# -- loading keys ----------------------------------------------------------------------------------------------------

def load_public_key(path: str) -> PublicKey:
    """The ECDSA P-256 public key in the PEM file `path`; UsageError (exit 2) naming the file and what is wrong."""
    return public_key_from_pem(_read_key_file(path, "public key"), path)


def public_key_from_pem(data: bytes, source: str) -> PublicKey:
    """The ECDSA P-256 public key in PEM `data` (read from `source`)."""
    crypto = _crypto()
    label, block = _single_pem_block(data, source, "public key", _PUBLIC_HINT)
    if label == "RSA PUBLIC KEY":
        raise _unusable(source, "public key", "is an RSA key; signatures here are ECDSA P-256", _PUBLIC_HINT)
    if label != "PUBLIC KEY":
        raise _unusable(source, "public key", f"holds a PEM {label!r} block, not a PUBLIC KEY", _PUBLIC_HINT)
    try:
        key = crypto.serialization.load_pem_public_key(block)
    except (ValueError, TypeError, crypto.UnsupportedAlgorithm):
        raise _unusable(source, "public key", "is not a valid PEM public key (damaged, or of an unknown kind)",
                        _PUBLIC_HINT) from None
    public = _require_p256(crypto, key, source, "public key", _PUBLIC_HINT)
    return _public_key(crypto, public, source)


def load_private_key(path: str, password: Optional[bytes]) -> PrivateKey:
    """The ECDSA P-256 private key in the PEM file `path`: PKCS#8 or SEC1, encrypted or not, or cosign's encrypted
    format (cosign.key). `password` (COSIGN_PASSWORD, read by the caller) opens an encrypted key and is ignored
    for a plain one; a cosign.key without one is tried with the empty password, as cosign makes them when
    COSIGN_PASSWORD is empty. UsageError (exit 2) for a file that cannot be used, a wrong or missing password; the
    message never holds the password."""
    return private_key_from_pem(_read_key_file(path, "private key"), password, path)


def private_key_from_pem(data: bytes, password: Optional[bytes], source: str) -> PrivateKey:
    """The ECDSA P-256 private key in PEM `data` (read from `source`); see `load_private_key`."""
    if password is not None and not isinstance(password, bytes):
        raise TypeError(f"the password must be bytes or None, not {type(password).__name__}")
    crypto = _crypto()
    label, block = _single_pem_block(data, source, "private key", _PRIVATE_HINT)
    if label in COSIGN_PEM_TYPES:
        key: Any = _cosign_private_key(crypto, block, password, source)
    elif label in ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY"):
        encrypted = label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block
        if encrypted and password is None:
            raise _unusable(source, "private key", "is encrypted and no password was given",
                            "give its password (COSIGN_PASSWORD)")
        try:
            key = crypto.serialization.load_pem_private_key(block, password if encrypted else None)
        except (ValueError, TypeError, crypto.UnsupportedAlgorithm):
            reason = ("cannot be decrypted: wrong password, or a damaged key" if encrypted
                      else "is not a valid PEM private key (damaged, or of an unknown kind)")
            raise _unusable(source, "private key", reason, _PRIVATE_HINT) from None
    elif label == "RSA PRIVATE KEY":
        raise _unusable(source, "private key", "is an RSA key; signatures here are ECDSA P-256", _PRIVATE_HINT)
    elif "PUBLIC KEY" in label or label == "CERTIFICATE":
        raise _unusable(source, "private key", f"holds a {label}, not a private key", _PRIVATE_HINT)
    else:
        raise _unusable(source, "private key", f"holds a PEM {label!r} block, not a private key", _PRIVATE_HINT)
    if not isinstance(key, crypto.ec.EllipticCurvePrivateKey):
        raise _unusable(source, "private key", f"is {_kind(crypto, key)}; signatures here are ECDSA P-256",
                        _PRIVATE_HINT)
    _require_p256(crypto, key.public_key(), source, "private key", _PRIVATE_HINT)
    return PrivateKey(key=key, public_key=_public_key(crypto, key.public_key(), source), source=source)


def _cosign_private_key(crypto: Any, block: bytes, password: Optional[bytes], source: str) -> Any:
    """Decrypt a cosign.key exactly as cosign's LoadPrivateKey does (go-securesystemslib encrypted.Decrypt, then
    x509.ParsePKCS8PrivateKey)."""
    damaged = "is not a valid cosign private key (damaged)"
    try:
        document = json.loads(_pem_body(block))
        kdf, cipher = document["kdf"], document["cipher"]
        kdf_name, cipher_name = kdf["name"], cipher["name"]
        params = kdf["params"]
        salt = _json_bytes(kdf["salt"])
        nonce = _json_bytes(cipher["nonce"])
        ciphertext = _json_bytes(document["ciphertext"])
    except (ValueError, KeyError, TypeError):
        raise _unusable(source, "private key", damaged, _PRIVATE_HINT) from None
    if kdf_name != "scrypt" or cipher_name != "nacl/secretbox":
        raise _unusable(source, "private key", f"uses {kdf_name!r} and {cipher_name!r}; only cosign's scrypt and "
                        "nacl/secretbox are known", _PRIVATE_HINT)
    if (not isinstance(params, dict) or not all(type(params.get(k)) is int for k in ("N", "r", "p"))
            or {k: params[k] for k in ("N", "r", "p")} not in COSIGN_SCRYPT_PARAMS):
        raise _unusable(source, "private key", "has scrypt parameters cosign does not accept", _PRIVATE_HINT)
    if len(nonce) != _SECRETBOX_NONCE_SIZE or len(ciphertext) < _SECRETBOX_MAC_SIZE:
        raise _unusable(source, "private key", damaged, _PRIVATE_HINT)
    try:
        from nacl.exceptions import CryptoError
        from nacl.secret import SecretBox
    except ImportError:
        raise SignatureUnavailable(
            f"private key {source} is in cosign's encrypted format, which needs PyNaCl to be read",
            hint="install python3-nacl (pip: PyNaCl), or sign with a PEM PKCS#8 P-256 key") from None
    secret = password if password is not None else b""
    box_key = crypto.Scrypt(salt=salt, length=_SECRETBOX_KEY_SIZE, n=params["N"], r=params["r"],
                            p=params["p"]).derive(secret)
    try:
        der = SecretBox(box_key).decrypt(ciphertext, nonce)
    except CryptoError:
        reason = ("cannot be decrypted without a password" if password is None
                  else "cannot be decrypted: wrong password, or a damaged key")
        raise _unusable(source, "private key", reason, "give its password (COSIGN_PASSWORD)") from None
    if not _is_pkcs8(der):
        # cosign refuses it too (x509.ParsePKCS8PrivateKey): it always writes PKCS#8.
        raise _unusable(source, "private key", "decrypts to a key that is not PKCS#8, which cosign does not "
                        "accept either", _PRIVATE_HINT)
    try:
        return crypto.serialization.load_der_private_key(der, None)
    except (ValueError, TypeError, crypto.UnsupportedAlgorithm):
        raise _unusable(source, "private key", "decrypts to a key of an unknown kind", _PRIVATE_HINT) from None


# -- signing and verifying -------------------------------------------------------------------------------------------

def sign(private_key: PrivateKey, data: bytes) -> str:
    """Base64 of the DER ECDSA P-256 signature over SHA-256 of `data` (what cosign stores and sign-blob writes)."""
    crypto = _crypto()
    _check_private(private_key)
    if not isinstance(data, bytes):
        raise TypeError(f"sign expects bytes, not {type(data).__name__}")
    signature = private_key.key.sign(data, crypto.ec.ECDSA(crypto.hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def sign_file_digest(private_key: PrivateKey, sha256_hex: str) -> str:
    """The signature `sign` would make over a file's bytes, from the file's SHA-256 (hex, or `sha256:`-prefixed)."""
    crypto = _crypto()
    _check_private(private_key)
    digest = _digest_bytes(sha256_hex)
    algorithm = crypto.ec.ECDSA(crypto.Prehashed(crypto.hashes.SHA256()))
    return base64.b64encode(private_key.key.sign(digest, algorithm)).decode("ascii")


def verify(public_key: PublicKey, data: bytes, signature_b64: Union[str, bytes]) -> bool:
    """True when `signature_b64` (base64 of a DER ECDSA signature, at most 1 KiB of text, surrounding whitespace
    allowed) is `public_key`'s signature over SHA-256 of `data`. False for anything else; never raises for a bad
    signature."""
    crypto = _crypto()
    _check_public(public_key)
    if not isinstance(data, bytes):
        raise TypeError(f"verify expects bytes, not {type(data).__name__}")
    signature = decode_signature(signature_b64)
    if signature is None:
        return False
    return _verify(crypto, public_key, signature, data, crypto.ec.ECDSA(crypto.hashes.SHA256()))


def verify_file_digest(public_key: PublicKey, sha256_hex: str, signature_b64: Union[str, bytes]) -> bool:
    """`verify` for a file whose SHA-256 (hex, or `sha256:`-prefixed) is already known: a detached signature made
    by `cosign sign-blob` over the file's bytes, checked without reading the file again."""
    crypto = _crypto()
    _check_public(public_key)
    digest = _digest_bytes(sha256_hex)
    signature = decode_signature(signature_b64)
    if signature is None:
        return False
    return _verify(crypto, public_key, signature, digest, crypto.ec.ECDSA(crypto.Prehashed(crypto.hashes.SHA256())))


def decode_signature(signature_b64: Union[str, bytes]) -> Optional[bytes]:
    """The DER bytes of a base64 signature text, or None when it is over 1 KiB, not strict base64 (surrounding
    whitespace aside) or empty."""
    if isinstance(signature_b64, bytes):
        if len(signature_b64) > SIGNATURE_TEXT_LIMIT:
            return None
        try:
            text = signature_b64.decode("ascii")
        except UnicodeDecodeError:
            return None
    elif isinstance(signature_b64, str):
        if len(signature_b64) > SIGNATURE_TEXT_LIMIT:
            return None
        text = signature_b64
    else:
        raise TypeError(f"a signature is base64 text (str or bytes), not {type(signature_b64).__name__}")
    text = text.strip(_WHITESPACE)
    if not text or not text.isascii():
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _verify(crypto: Any, public_key: PublicKey, signature: bytes, message: bytes, algorithm: Any) -> bool:
    try:
        public_key.key.verify(signature, message, algorithm)
    except crypto.InvalidSignature:
        return False
    return True


# -- helpers ---------------------------------------------------------------------------------------------------------

class _Crypto:
    """The parts of `cryptography` used here, imported on first use."""

    def __init__(self) -> None:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        self.InvalidSignature = InvalidSignature
        self.UnsupportedAlgorithm = UnsupportedAlgorithm
        self.hashes = hashes
        self.serialization = serialization
        self.ec = ec
        self.rsa = rsa
        self.dsa = dsa
        self.ed25519 = ed25519
        self.ed448 = ed448
        self.Prehashed = Prehashed
        self.Scrypt = Scrypt


_CRYPTO: Optional[_Crypto] = None


def _crypto() -> Any:
    global _CRYPTO
    if _CRYPTO is None:
        try:
            _CRYPTO = _Crypto()
        except ImportError:
            raise SignatureUnavailable(
                "signatures need the cryptography library, which this installation lacks",
                hint="install python3-cryptography (pip: cryptography); the single-file build does not include "
                     "it") from None
    return _CRYPTO


def _read_key_file(path: str, what: str) -> bytes:
    try:
        return read_regular_file(path, KEY_FILE_LIMIT)
    except UnreadableFile as exc:
        hint = _PUBLIC_HINT if what == "public key" else _PRIVATE_HINT
        raise UsageError(f"{what} {exc}", hint=hint) from None


def _unusable(source: str, what: str, reason: str, hint: str) -> UsageError:
    return UsageError(f"{what} {source} {reason}", hint=hint)


def _single_pem_block(data: bytes, source: str, what: str, hint: str) -> Tuple[str, bytes]:
    """(label, the block's text) of the one PEM block in `data`."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise _unusable(source, what, "is not a PEM file (it is not ASCII text)", hint) from None
    blocks = list(_PEM_BLOCK.finditer(text))
    if not blocks:
        raise _unusable(source, what, "is not a PEM file (no BEGIN/END block)", hint)
    if len(blocks) > 1 or len(_PEM_BEGIN.findall(text)) > 1:
        raise _unusable(source, what, "holds more than one PEM block; give a file with one key", hint)
    return blocks[0].group(1), blocks[0].group(0).encode("ascii") + b"\n"


def _pem_body(block: bytes) -> bytes:
    """The base64-decoded body of one PEM block without headers; ValueError when it is not strict base64."""
    lines = block.decode("ascii").strip().splitlines()[1:-1]
    return base64.b64decode("".join(line.strip() for line in lines), validate=True)


def _json_bytes(value: Any) -> bytes:
    """A Go `[]byte` from encoding/json: standard base64 with padding."""
    if not isinstance(value, str):
        raise TypeError("not a base64 string")
    return base64.b64decode(value, validate=True)


def _is_pkcs8(der: bytes) -> bool:
    """Whether DER `der` is a PKCS#8 PrivateKeyInfo: SEQUENCE { INTEGER version, SEQUENCE algorithm, ... } (a SEC1
    ECPrivateKey has an OCTET STRING after its version)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    offset = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    version = der[offset:offset + 3]
    return len(version) == 3 and version[0] == 0x02 and version[1] == 0x01 and der[offset + 3:offset + 4] == b"\x30"


def _require_p256(crypto: Any, key: Any, source: str, what: str, hint: str) -> Any:
    if not isinstance(key, crypto.ec.EllipticCurvePublicKey):
        raise _unusable(source, what, f"is {_kind(crypto, key)}; signatures here are ECDSA P-256", hint)
    if key.curve.name != CURVE_NAME:
        raise _unusable(source, what, f"is an ECDSA key on {key.curve.name}; signatures here are ECDSA P-256 "
                        "(secp256r1)", hint)
    return key


def _kind(crypto: Any, key: Any) -> str:
    for kinds, text in (((crypto.rsa.RSAPublicKey, crypto.rsa.RSAPrivateKey), "an RSA key"),
                        ((crypto.dsa.DSAPublicKey, crypto.dsa.DSAPrivateKey), "a DSA key"),
                        ((crypto.ed25519.Ed25519PublicKey, crypto.ed25519.Ed25519PrivateKey), "an Ed25519 key"),
                        ((crypto.ed448.Ed448PublicKey, crypto.ed448.Ed448PrivateKey), "an Ed448 key")):
        if isinstance(key, kinds):
            return text
    return "not an ECDSA key"


def _public_key(crypto: Any, key: Any, source: str) -> PublicKey:
    der = key.public_bytes(crypto.serialization.Encoding.DER, crypto.serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKey(key=key, spki_der=der, source=source)


def _check_public(public_key: Any) -> None:
    if not isinstance(public_key, PublicKey):
        raise TypeError(f"expected a PublicKey (load_public_key), not {type(public_key).__name__}")


def _check_private(private_key: Any) -> None:
    if not isinstance(private_key, PrivateKey):
        raise TypeError(f"expected a PrivateKey (load_private_key), not {type(private_key).__name__}")


def _digest_bytes(sha256_hex: str) -> bytes:
    if not isinstance(sha256_hex, str):
        raise TypeError(f"a SHA-256 digest is hex text, not {type(sha256_hex).__name__}")
    hex_digits = sha256_hex[len("sha256:"):] if sha256_hex.startswith("sha256:") else sha256_hex
    if not _SHA256_HEX.fullmatch(hex_digits):
        raise ValueError(f"not a SHA-256 digest: {sha256_hex[:80]!r}")
    return bytes.fromhex(hex_digits)


def _digest_text(digest: str) -> str:
    return f"sha256:{digest.lower()}" if _SHA256_HEX.fullmatch(digest) else digest


def required_key(settings: Settings) -> Optional[PublicKey]:
    """The key whose valid signature every artifact needs (`--verify-key`), or None when signatures are not
    required. Loaded where it is needed, so that a run without a key never imports the cryptography."""
    return load_public_key(settings.verify.key) if settings.verify.key else None


def required_signer(settings: Settings) -> Optional[str]:
    """The id of the required key, as the acquisition policy and cache records name it."""
    key = required_key(settings)
    return key.key_id if key is not None else None
