"""driver_loader.artifacts.signature: ECDSA P-256 keys in cosign's formats, signatures that openssl and cosign agree
with. Keys are made at test time, with `cryptography` and with the `openssl` command; the only keys written here are
cosign's own published test vectors (below), read as cosign reads them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from driver_loader.artifacts import signature
from driver_loader.artifacts.signature import (
    PrivateKey,
    PublicKey,
    SignatureError,
    SignatureUnavailable,
    key_id,
    load_private_key,
    load_public_key,
    sign,
    sign_file_digest,
    verify,
    verify_file_digest,
)
from driver_loader.core.errors import ExitCode, UsageError

DATA = b"a driver's bytes\x00\x7fELF" * 1000
PASSWORD = b"correct horse battery staple"


# -- helpers ---------------------------------------------------------------------------------------------------------

def openssl(*args, cwd, check=True, input=None):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed (Debian: openssl, listed in .ci/apt-packages)")
    return subprocess.run(["openssl", *args], cwd=cwd, check=check, capture_output=True, input=input, timeout=60)


def write(path, data):
    path.write_bytes(data)
    return str(path)


def pkcs8_pem(key, password=None):
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def spki_pem(key):
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def cosign_key_pem(private_der, password, *, label="ENCRYPTED SIGSTORE PRIVATE KEY", n=32768, r=8, p=1,
                   kdf_name="scrypt", cipher_name="nacl/secretbox"):
    """A private key in cosign's format, made as go-securesystemslib's encrypted.Encrypt makes it: scrypt over the
    password with a random 32-byte salt gives a 32-byte key, which seals the PKCS#8 DER in a NaCl secretbox under a
    random 24-byte nonce; Go's encoding/json writes the []byte fields as standard base64; pem.EncodeToMemory wraps
    the JSON's base64 at 64 columns."""
    secret = pytest.importorskip("nacl.secret", reason="PyNaCl (python3-nacl) is needed to make cosign-format keys")
    salt, nonce = os.urandom(32), os.urandom(24)
    box_key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password)
    ciphertext = secret.SecretBox(box_key).encrypt(private_der, nonce).ciphertext  # MAC (16 bytes) + box, as Go's
    document = {
        "kdf": {"name": kdf_name, "params": {"N": n, "r": r, "p": p}, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": cipher_name, "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    body = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
    return (f"-----BEGIN {label}-----\n" + "\n".join(textwrap.wrap(body, 64)) + f"\n-----END {label}-----\n").encode()


def pkcs8_der(key):
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture
def key_files(tmp_path):
    """A P-256 key pair made with cryptography: (private PKCS#8 PEM path, public PEM path, the key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return write(tmp_path / "key.pem", pkcs8_pem(key)), write(tmp_path / "pub.pem", spki_pem(key.public_key())), key


@pytest.fixture
def openssl_keys(tmp_path):
    """P-256 keys made by the openssl command: PKCS#8 (genpkey), SEC1 (ecparam), and the public key (pkey -pubout)."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "key.pem", cwd=tmp_path)
    openssl("pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem", cwd=tmp_path)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sec1.pem", cwd=tmp_path)
    openssl("pkey", "-in", "sec1.pem", "-pubout", "-out", "sec1.pub.pem", cwd=tmp_path)
    return tmp_path


def assert_usage_error(excinfo, *words):
    error = excinfo.value
    assert isinstance(error, UsageError) and error.exit_code == ExitCode.USAGE == 2
    for word in words:
        assert word in str(error), (word, str(error))
    assert error.hint


# -- interoperability with openssl -----------------------------------------------------------------------------------

def test_our_signature_verifies_with_openssl(openssl_keys):
    """`sign` makes what `openssl dgst -sha256 -sign` makes: a DER ECDSA signature over SHA-256 of the bytes."""
    data = write(openssl_keys / "data.bin", DATA)
    for private, public in (("key.pem", "pub.pem"), ("sec1.pem", "sec1.pub.pem")):
        signature_b64 = sign(load_private_key(str(openssl_keys / private), None), DATA)
        write(openssl_keys / "sig.der", base64.b64decode(signature_b64, validate=True))
        result = openssl("dgst", "-sha256", "-verify", public, "-signature", "sig.der", data, cwd=openssl_keys,
                         check=False)
        assert result.returncode == 0 and b"Verified OK" in result.stdout, result
        # ... and openssl refuses it for other bytes, so the check above can fail.
        tampered = write(openssl_keys / "tampered.bin", DATA + b"\x00")
        result = openssl("dgst", "-sha256", "-verify", public, "-signature", "sig.der", tampered, cwd=openssl_keys,
                         check=False)
        assert result.returncode != 0


def test_openssl_signature_verifies_with_ours(openssl_keys):
    data = write(openssl_keys / "data.bin", DATA)
    for private, public in (("key.pem", "pub.pem"), ("sec1.pem", "sec1.pub.pem")):
        openssl("dgst", "-sha256", "-sign", private, "-out", "sig.der", data, cwd=openssl_keys)
        signature_b64 = base64.b64encode((openssl_keys / "sig.der").read_bytes()).decode()
        pub = load_public_key(str(openssl_keys / public))
        assert verify(pub, DATA, signature_b64)
        assert verify_file_digest(pub, hashlib.sha256(DATA).hexdigest(), signature_b64)
        assert verify_file_digest(pub, "sha256:" + hashlib.sha256(DATA).hexdigest(), signature_b64)
        assert not verify(pub, DATA[:-1], signature_b64)
        assert not verify_file_digest(pub, hashlib.sha256(DATA[:-1]).hexdigest(), signature_b64)


def test_signature_from_a_known_digest_verifies_with_openssl_over_the_file(openssl_keys):
    """sign_file_digest signs a file from its SHA-256 alone: the same signature as over the bytes (cosign sign-blob,
    openssl dgst)."""
    data = write(openssl_keys / "data.bin", DATA)
    signature_b64 = sign_file_digest(load_private_key(str(openssl_keys / "key.pem"), None),
                                     hashlib.sha256(DATA).hexdigest())
    write(openssl_keys / "sig.der", base64.b64decode(signature_b64))
    result = openssl("dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", data, cwd=openssl_keys,
                     check=False)
    assert result.returncode == 0 and b"Verified OK" in result.stdout, result
    assert verify(load_public_key(str(openssl_keys / "pub.pem")), DATA, signature_b64)


def test_key_id_is_the_sha256_of_the_der_public_key(openssl_keys):
    der = openssl("pkey", "-pubin", "-in", "pub.pem", "-outform", "DER", cwd=openssl_keys).stdout
    pub = load_public_key(str(openssl_keys / "pub.pem"))
    assert key_id(pub) == hashlib.sha256(der).hexdigest()[:16] == pub.key_id
    assert pub.fingerprint == hashlib.sha256(der).hexdigest()
    assert pub.spki_der == der
    private = load_private_key(str(openssl_keys / "key.pem"), None)
    assert private.key_id == key_id(private.public_key) == key_id(pub)
    assert private.public_key == pub
    # The PEM text as cosign.pub and openssl write it; a different key has a different id.
    assert pub.pem() == (openssl_keys / "pub.pem").read_bytes()
    assert key_id(load_public_key(str(openssl_keys / "sec1.pub.pem"))) != key_id(pub)
    with pytest.raises(TypeError):
        key_id(private)


# -- signing and verifying -------------------------------------------------------------------------------------------

def test_sign_and_verify_round_trip(key_files):
    private_path, public_path, _ = key_files
    private, pub = load_private_key(private_path, None), load_public_key(public_path)
    signature_b64 = sign(private, DATA)
    assert isinstance(signature_b64, str)
    der = base64.b64decode(signature_b64, validate=True)
    assert der[0] == 0x30 and len(der) <= 72  # a DER SEQUENCE of two INTEGERs
    assert verify(pub, DATA, signature_b64)
    assert verify(pub, DATA, signature_b64.encode() + b"\n")  # a .sig file as `cosign sign-blob > f.sig` writes it
    assert verify(pub, b"", sign(private, b""))


def test_wrong_key_and_tampered_data_do_not_verify(key_files):
    private_path, public_path, _ = key_files
    private, pub = load_private_key(private_path, None), load_public_key(public_path)
    other = ec.generate_private_key(ec.SECP256R1())
    other_pub = signature.public_key_from_pem(spki_pem(other.public_key()), "other.pub")
    signature_b64 = sign(private, DATA)
    assert verify(pub, DATA, signature_b64)
    assert not verify(other_pub, DATA, signature_b64)
    assert not verify_file_digest(other_pub, hashlib.sha256(DATA).hexdigest(), signature_b64)
    tampered = bytearray(DATA)
    tampered[1234] ^= 1
    assert not verify(pub, bytes(tampered), signature_b64)
    der = bytearray(base64.b64decode(signature_b64))
    der[-1] ^= 1
    assert not verify(pub, DATA, base64.b64encode(bytes(der)).decode())


@pytest.mark.parametrize("bad", [
    "",
    "   \n",
    "not base64 at all!",
    "AAAA",  # valid base64, not DER
    "MEUCIQ",  # truncated, no padding
    "ME UCIQ==",  # whitespace inside
    "é" * 10,
    b"\xff\xfe",
    "A" * 2000,  # over the 1 KiB bound
], ids=["empty", "blank", "garbage", "not-der", "unpadded", "inner-space", "non-ascii", "non-utf8", "oversized"])
def test_bad_signature_texts_are_false_not_errors(key_files, bad):
    pub = load_public_key(key_files[1])
    assert verify(pub, DATA, bad) is False
    assert verify_file_digest(pub, hashlib.sha256(DATA).hexdigest(), bad) is False


def test_truncated_and_padded_signatures_do_not_verify(key_files):
    private_path, public_path, _ = key_files
    pub = load_public_key(public_path)
    der = base64.b64decode(sign(load_private_key(private_path, None), DATA))
    for changed in (der[:-1], der[:8], der + b"\x00", der + der, b"\x00" * (1024 * 3 // 4)):
        assert not verify(pub, DATA, base64.b64encode(changed).decode())
    # The bound is on the text: a valid signature with a kilobyte of trailing blanks is refused unread.
    assert not verify(pub, DATA, base64.b64encode(der).decode() + " " * 1024)
    # Strict base64: a lenient decoder would drop the stray characters and find the valid signature.
    text = base64.b64encode(der).decode()
    for stray in ("!", "\n", " ", "."):
        assert not verify(pub, DATA, text[:10] + stray + text[10:])
    assert verify(pub, DATA, text)


def test_programming_errors_raise(key_files):
    private_path, public_path, _ = key_files
    private, pub = load_private_key(private_path, None), load_public_key(public_path)
    signature_b64 = sign(private, DATA)
    with pytest.raises(TypeError):
        verify(private, DATA, signature_b64)
    with pytest.raises(TypeError):
        verify(pub, DATA.decode("latin-1"), signature_b64)
    with pytest.raises(TypeError):
        verify(pub, DATA, 12345)
    with pytest.raises(TypeError):
        sign(pub, DATA)
    with pytest.raises(ValueError):
        verify_file_digest(pub, "sha256:1234", signature_b64)
    with pytest.raises(ValueError):
        sign_file_digest(private, "z" * 64)
    with pytest.raises(TypeError):
        load_private_key(private_path, "a str password")


def test_signature_error_names_key_and_digest(key_files):
    pub = load_public_key(key_files[1])
    digest = hashlib.sha256(DATA).hexdigest()
    missing = SignatureError(pub, digest, missing=True, where="oci://registry.example/falco:sha256-x.sig")
    invalid = SignatureError(pub, "sha256:" + digest, missing=False, where="https://mirror.example/d/f.ko.sig",
                             detail="it does not verify")
    for error in (missing, invalid):
        assert error.exit_code == ExitCode.VERIFICATION == 4
        assert pub.key_id in str(error) and f"sha256:{digest}" in str(error)
        assert error.key_id == pub.key_id and error.digest == f"sha256:{digest}"
        assert error.hint and pub.key_id in error.hint
    assert missing.missing and "no signature" in str(missing) and "sha256-x.sig" in str(missing)
    assert not invalid.missing and "not valid" in str(invalid) and "f.ko.sig" in str(invalid)


# -- refused keys ----------------------------------------------------------------------------------------------------

def test_rsa_keys_are_refused(tmp_path):
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem", cwd=tmp_path)
    openssl("pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub", cwd=tmp_path)
    openssl("rsa", "-in", "rsa.pem", "-traditional", "-out", "rsa1.pem", cwd=tmp_path)
    openssl("rsa", "-in", "rsa.pem", "-RSAPublicKey_out", "-out", "rsa1.pub", cwd=tmp_path)
    for public in ("rsa.pub", "rsa1.pub"):
        with pytest.raises(UsageError) as excinfo:
            load_public_key(str(tmp_path / public))
        assert_usage_error(excinfo, "RSA", "P-256", public)
    for private in ("rsa.pem", "rsa1.pem"):
        with pytest.raises(UsageError) as excinfo:
            load_private_key(str(tmp_path / private), None)
        assert_usage_error(excinfo, "RSA", "P-256", private)


def test_other_curves_and_kinds_are_refused(tmp_path):
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", "p384.pem", cwd=tmp_path)
    openssl("pkey", "-in", "p384.pem", "-pubout", "-out", "p384.pub", cwd=tmp_path)
    openssl("genpkey", "-algorithm", "ED25519", "-out", "ed.pem", cwd=tmp_path)
    openssl("pkey", "-in", "ed.pem", "-pubout", "-out", "ed.pub", cwd=tmp_path)
    for path, words in (("p384.pub", ("secp384r1", "P-256")), ("p384.pem", ("secp384r1", "P-256")),
                        ("ed.pub", ("Ed25519", "P-256")), ("ed.pem", ("Ed25519", "P-256"))):
        loader = load_public_key if path.endswith(".pub") else (lambda p: load_private_key(p, None))
        with pytest.raises(UsageError) as excinfo:
            loader(str(tmp_path / path))
        assert_usage_error(excinfo, path, *words)


@pytest.mark.parametrize("content, words", [
    (b"", ("not a PEM file",)),
    (b"hello\n", ("not a PEM file",)),
    (b"\xff\xfe\x00garbage", ("not ASCII",)),
    (b"-----BEGIN PUBLIC KEY-----\nnot base64 !\n-----END PUBLIC KEY-----\n", ("not a valid PEM public key",)),
    (b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
     ("not a valid PEM public key",)),  # truncated
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ("CERTIFICATE",)),
], ids=["empty", "text", "binary", "bad-base64", "truncated", "certificate"])
def test_garbage_public_key_files_are_refused(tmp_path, content, words):
    with pytest.raises(UsageError) as excinfo:
        load_public_key(write(tmp_path / "cosign.pub", content))
    assert_usage_error(excinfo, "cosign.pub", *words)


def test_unreadable_and_ambiguous_key_files_are_refused(tmp_path, key_files):
    _, public_path, key = key_files
    pem = spki_pem(key.public_key())
    cases = {
        str(tmp_path / "missing.pub"): "missing.pub",
        str(tmp_path): "directory",
        "/dev/zero": "character device",
        write(tmp_path / "big.pub", pem + b"#" * (64 * 1024)): "larger than 64 KiB",
        write(tmp_path / "two.pub", pem + spki_pem(ec.generate_private_key(ec.SECP256R1()).public_key())):
            "more than one PEM block",
        write(tmp_path / "private-as-public.pub", pkcs8_pem(key)): "PRIVATE KEY",
    }
    for path, words in cases.items():
        with pytest.raises(UsageError) as excinfo:
            load_public_key(path)
        assert_usage_error(excinfo, words)
    with pytest.raises(UsageError) as excinfo:
        load_private_key(public_path, None)
    assert_usage_error(excinfo, "PUBLIC KEY", "not a private key")
    # Text around the one block is allowed, as openssl and Go's pem.Decode allow it.
    assert load_public_key(write(tmp_path / "commented.pub", b"# fleet builder key\n" + pem)).key_id


# -- private key formats ---------------------------------------------------------------------------------------------

def test_encrypted_pkcs8_with_right_wrong_and_no_password(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = write(tmp_path / "enc.pem", pkcs8_pem(key, PASSWORD))
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "enc.pem").read_bytes()
    loaded = load_private_key(path, PASSWORD)
    assert loaded.public_key.spki_der == signature.public_key_from_pem(spki_pem(key.public_key()), "p").spki_der
    pub = signature.public_key_from_pem(spki_pem(key.public_key()), "pub")
    assert verify(pub, DATA, sign(loaded, DATA))
    with pytest.raises(UsageError) as excinfo:
        load_private_key(path, b"hunter2")
    assert_usage_error(excinfo, "enc.pem", "wrong password")
    assert "hunter2" not in str(excinfo.value) + excinfo.value.hint
    with pytest.raises(UsageError) as excinfo:
        load_private_key(path, None)
    assert_usage_error(excinfo, "enc.pem", "encrypted", "no password")


def test_openssl_encrypted_keys(openssl_keys):
    """openssl's encrypted PKCS#8 (pkey -aes256) and the traditional encrypted SEC1 PEM (Proc-Type header)."""
    openssl("pkey", "-in", "key.pem", "-aes256", "-passout", "pass:s3cret", "-out", "enc8.pem", cwd=openssl_keys)
    traditional = load_private_key(str(openssl_keys / "sec1.pem"), None).key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"s3cret"))
    assert b"Proc-Type: 4,ENCRYPTED" in traditional
    write(openssl_keys / "enc1.pem", traditional)
    for name, public in (("enc8.pem", "pub.pem"), ("enc1.pem", "sec1.pub.pem")):
        private = load_private_key(str(openssl_keys / name), b"s3cret")
        assert private.public_key == load_public_key(str(openssl_keys / public))
        with pytest.raises(UsageError):
            load_private_key(str(openssl_keys / name), b"s3cret!")
        with pytest.raises(UsageError):
            load_private_key(str(openssl_keys / name), None)


def test_a_password_for_a_plain_key_is_ignored(key_files):
    """COSIGN_PASSWORD may be set for every job while one uses an unencrypted PKCS#8 key."""
    private_path, public_path, _ = key_files
    assert load_private_key(private_path, b"unused").public_key == load_public_key(public_path)


def test_private_key_repr_shows_no_secret(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    private = load_private_key(write(tmp_path / "k.pem", pkcs8_pem(key)), None)
    scalar = format(key.private_numbers().private_value, "x")
    for text in (repr(private), str(private)):
        assert scalar not in text and "k.pem" in text
        assert base64.b64encode(pkcs8_der(key)).decode()[:40] not in text


# -- cosign's encrypted private key (cosign.key) ---------------------------------------------------------------------

def test_cosign_key_with_right_and_wrong_password(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pub = signature.public_key_from_pem(spki_pem(key.public_key()), "cosign.pub")
    for label in ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"):
        path = write(tmp_path / "cosign.key", cosign_key_pem(pkcs8_der(key), PASSWORD, label=label))
        private = load_private_key(path, PASSWORD)
        assert private.public_key == pub
        assert verify(pub, DATA, sign(private, DATA))
        for wrong in (b"wrong", b"", None):
            with pytest.raises(UsageError) as excinfo:
                load_private_key(path, wrong)
            assert_usage_error(excinfo, "cosign.key", "cannot be decrypted")
            assert excinfo.value.hint == "give its password (COSIGN_PASSWORD)"


def test_cosign_key_with_an_empty_password_needs_none(tmp_path):
    """`COSIGN_PASSWORD= cosign generate-key-pair` makes a key under the empty password; it loads without one."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = write(tmp_path / "cosign.key", cosign_key_pem(pkcs8_der(key), b""))
    assert load_private_key(path, None).public_key.spki_der == load_private_key(path, b"").public_key.spki_der
    with pytest.raises(UsageError):
        load_private_key(path, b"x")


@pytest.mark.parametrize("change, words", [
    ({"n": 1 << 20}, ("scrypt parameters",)),  # would take a GiB: refused before any derivation
    ({"n": 1024}, ("scrypt parameters",)),
    ({"r": 16}, ("scrypt parameters",)),
    ({"kdf_name": "argon2"}, ("argon2",)),
    ({"cipher_name": "aes-gcm"}, ("aes-gcm",)),
], ids=["huge-n", "small-n", "r", "kdf", "cipher"])
def test_cosign_key_with_unknown_parameters_is_refused(tmp_path, change, words):
    key = ec.generate_private_key(ec.SECP256R1())
    n = change.get("n", 32768)
    params = {k: v for k, v in change.items() if k != "n"}
    # Encrypt with a cheap N (what is written is what matters), then write the parameter under test.
    pem = cosign_key_pem(pkcs8_der(key), PASSWORD, **params)
    body = "".join(pem.decode().splitlines()[1:-1])
    document = json.loads(base64.b64decode(body))
    document["kdf"]["params"]["N"] = n
    body = base64.b64encode(json.dumps(document).encode()).decode()
    path = write(tmp_path / "cosign.key", (f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}\n"
                                           f"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n").encode())
    with pytest.raises(UsageError) as excinfo:
        load_private_key(path, PASSWORD)
    assert_usage_error(excinfo, "cosign.key", *words)


def test_damaged_cosign_keys_are_refused(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    label = "ENCRYPTED SIGSTORE PRIVATE KEY"
    good = json.loads(base64.b64decode("".join(cosign_key_pem(pkcs8_der(key), PASSWORD).decode().splitlines()[1:-1])))
    flipped = bytearray(base64.b64decode(good["ciphertext"]))
    flipped[20] ^= 1
    variants = {
        "not-json": b"{not json",
        "list": b"[]",
        "no-salt": json.dumps({**good, "kdf": {**good["kdf"], "salt": None}}).encode(),
        "short-nonce": json.dumps({**good, "cipher": {**good["cipher"], "nonce": "AAAA"}}).encode(),
        "float-n": json.dumps({**good, "kdf": {**good["kdf"], "params": {"N": 32768.0, "r": 8, "p": 1}}}).encode(),
        "flipped": json.dumps({**good, "ciphertext": base64.b64encode(bytes(flipped)).decode()}).encode(),
    }
    for name, document in variants.items():
        body = base64.b64encode(document).decode()
        path = write(tmp_path / f"{name}.key", f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode())
        with pytest.raises(UsageError) as excinfo:
            load_private_key(path, PASSWORD)
        assert_usage_error(excinfo, f"{name}.key")


def test_cosign_key_holding_sec1_or_another_curve_is_refused(tmp_path):
    """cosign parses the decrypted key with x509.ParsePKCS8PrivateKey, and we take only P-256."""
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    with pytest.raises(UsageError) as excinfo:
        load_private_key(write(tmp_path / "sec1.key", cosign_key_pem(sec1, PASSWORD)), PASSWORD)
    assert_usage_error(excinfo, "PKCS#8")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(UsageError) as excinfo:
        load_private_key(write(tmp_path / "p384.key", cosign_key_pem(pkcs8_der(p384), PASSWORD)), PASSWORD)
    assert_usage_error(excinfo, "secp384r1")


def test_cosign_key_without_pynacl_names_the_package(tmp_path, monkeypatch):
    key = ec.generate_private_key(ec.SECP256R1())
    path = write(tmp_path / "cosign.key", cosign_key_pem(pkcs8_der(key), PASSWORD))
    for module in ("nacl", "nacl.secret", "nacl.exceptions"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(SignatureUnavailable) as excinfo:
        load_private_key(path, PASSWORD)
    assert excinfo.value.exit_code == ExitCode.USAGE
    assert "PyNaCl" in str(excinfo.value) and "python3-nacl" in excinfo.value.hint
    # PEM keys need no PyNaCl.
    assert load_private_key(write(tmp_path / "k.pem", pkcs8_pem(key)), None).key_id


def test_without_cryptography_using_a_key_names_the_package(tmp_path, monkeypatch, key_files):
    monkeypatch.setattr(signature, "_CRYPTO", None)
    monkeypatch.setitem(sys.modules, "cryptography.exceptions", None)
    with pytest.raises(SignatureUnavailable) as excinfo:
        load_public_key(key_files[1])
    assert excinfo.value.exit_code == ExitCode.USAGE and "python3-cryptography" in excinfo.value.hint


def test_importing_the_module_does_not_import_cryptography():
    """Start-up stays cheap (printenv, the fast path) and the single-file build, which lacks cryptography, can
    import it."""
    probe = "import sys, driver_loader.artifacts.signature; print(sorted(m for m in sys.modules if m.startswith(('cryptography', 'nacl'))))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# cosign's published test keys, password "hello": pkg/cosign/keys_test.go in github.com/sigstore/cosign (consts
# pemsigstorekey, pemcosignkey and pemcosigneckey; file as of commit b36644f793e61bec1e5f68cfb163aef1968556e3, read
# at d6d86c224e5899b54f56cbb063b79dc43abc11c2). Apache-2.0, The Sigstore Authors. cosign's TestReadingPrivatePemTypes
# loads the first two and refuses the third ("use ParseECPrivateKey instead": it holds SEC1, not PKCS#8).
COSIGN_VECTOR_PASSWORD = b"hello"
COSIGN_SIGSTORE_KEY = b"""-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6
OCwicCI6MX0sInNhbHQiOiI3T3VGd2VsbWZZNXVId2NoaURSc210anNwZ2ZlZjFG
Mk5lOGFDTjVLYVpZPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJQNHk4OGhCb3ZTa09MbXN0bFVBaGJwdDJ0K2xTNUxQSCJ9LCJj
aXBoZXJ0ZXh0IjoiMnB1QzdyZldJOWh3bnJlQ2s4aUZDRlVwQlRrSzRJNlIvbFBF
cnBDekpXUGpJWXl4eGVIL1A2VW52cFJHdVhla1NNb3JMdGhLamdoQ1JlNy82NDVH
QWtoVm1LRC92eEF0S2EvbE1abENSQ3FlekJGUFd1dzNpeFRtZ2xhb2J1ZFVSbUVs
bmNGOGlZbzBTMVl6Y1ZOMVFwY2J2c0dNcUlYRzVlbmdteGp5dCtBcXlyZTF0Q0Y0
V01tU1BlaEljNlBqd2h1Q2xHaVpJUWRvTGc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
"""
COSIGN_COSIGN_KEY = b"""-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6
OCwicCI6MX0sInNhbHQiOiJ4WWdoc09JTUxUWGNOT0RsclNIOUNKc1FlOVFnZmN1
cmUrMXlLdHh1TlkwPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiI0cS9PSlVmaXJkSUkrUjZ0ajZBMmcyQ0JqL25xdFNicCJ9LCJj
aXBoZXJ0ZXh0IjoiKzB4Q3NzcFN0WStBczdKanJpOWtsbHBWd2JhcUI4ZWJNdWto
eS9aVE1MSXRsL3B1YS9jWVJvbytLRGxMWWdmOW1kSjk4K1FnQW9oTktoYnJPMTcw
MHdBY1JTMjFDOE4zQUNJRUVZaWpOMllBNnMraGJSbkhjUnd4eGhDMDFtb2FvL0dO
Y1pmbEJheXZMV3pXblo4d2NDZ2ZpT1o1VXlRTEFJMHh0dnR6dEh3cTdDV1Vhd3V4
RlhlNDZzck9TUE9SNHN6bytabWErUGovSFE9PSJ9
-----END ENCRYPTED COSIGN PRIVATE KEY-----
"""
COSIGN_SEC1_KEY = b"""-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJHK3F5WTYrNzhNS0JzMXNGTGs1ajYwcS9kS3Z1czBW
VkhlSHZybC9POTF3PSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJRc2JGdG13WDRDK2ttV3ZCcVRaMEFGOUFYdk1jRmg1SCJ9LCJj
aXBoZXJ0ZXh0IjoiREM5T28zeldiYVQzSXYwdFVnWEdycjUxYW1samwwNlQ5MTNP
VkxPbWpuMWhnK2o2WXRUbWg3SGhZSlY1N2J5eGE0Q281bE9YYmRqbTJ3aklubEd1
Um5aZCt5OExnekpSNzFSeEhKVzgrWmRlcFJmYWJMTjdHbDgrSFZEcERVQ3NxQnRh
VngyblpGbFEwWUl1anZwbFphblNGaUVvdERLVGkxZ3VhUXIwUHNzYU01NXZxbTRY
WS9rPSJ9
-----END ENCRYPTED COSIGN PRIVATE KEY-----
"""


@pytest.mark.parametrize("pem", [COSIGN_SIGSTORE_KEY, COSIGN_COSIGN_KEY], ids=["sigstore-label", "cosign-label"])
def test_cosign_published_test_keys(tmp_path, pem, openssl_keys):
    pytest.importorskip("nacl.secret", reason="PyNaCl (python3-nacl) reads cosign.key")
    path = write(tmp_path / "cosign.key", pem)
    private = load_private_key(path, COSIGN_VECTOR_PASSWORD)
    assert isinstance(private, PrivateKey) and isinstance(private.public_key, PublicKey)
    # What we sign with cosign's key, openssl verifies with its public half.
    write(openssl_keys / "cosign.pub", private.public_key.pem())
    write(openssl_keys / "data.bin", DATA)
    write(openssl_keys / "sig.der", base64.b64decode(sign(private, DATA)))
    result = openssl("dgst", "-sha256", "-verify", "cosign.pub", "-signature", "sig.der", "data.bin",
                     cwd=openssl_keys, check=False)
    assert result.returncode == 0 and b"Verified OK" in result.stdout, result
    with pytest.raises(UsageError):
        load_private_key(path, b"Hello")


def test_cosign_published_sec1_test_key_is_refused_as_cosign_refuses_it(tmp_path):
    pytest.importorskip("nacl.secret", reason="PyNaCl (python3-nacl) reads cosign.key")
    with pytest.raises(UsageError) as excinfo:
        load_private_key(write(tmp_path / "cosign.key", COSIGN_SEC1_KEY), COSIGN_VECTOR_PASSWORD)
    assert_usage_error(excinfo, "not PKCS#8")
