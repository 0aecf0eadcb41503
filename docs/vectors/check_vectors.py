#!/usr/bin/env python3
"""Independent checker for Hushwire's published test vectors.

Recomputes every derived value in docs/vectors/*.json from the published RNG draws and public
data, using only Python 3 and the `cryptography` package (no Rust, no reproduction of the RNG),
and asserts that it equals what the vectors publish.

    python3 docs/vectors/check_vectors.py [vectors-dir]

Each check prints `ok   <name>` or `FAIL <name>` with the expected (published) and actual
(recomputed) values. The last line is `N passed, M failed`. Exit status: 0 if every check passed,
1 if any failed, 2 if the `cryptography` package (with ML-KEM support) is missing.

This checks protocol version 2 (docs/protocol.md, "Changes from version 1"): prekey signatures
over the device id, the handshake transcript hash TH and SK || HK_A || NHK_B, the Double Ratchet
with encrypted headers (XChaCha20-Poly1305 under per-chain header keys) and AES-256-GCM bodies,
and the version byte 0x02. It is written from docs/protocol.md and docs/wire-format.md; the
formulas used here are written out next to each computation, with their section numbers.
"""

import copy
import json
import os
import sys

try:
    from cryptography.exceptions import InvalidSignature, InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as crypto_hmac
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
except ImportError as e:  # pragma: no cover - environment check
    print(f"error: the Python package `cryptography` is required ({e}).")
    print("       Install it with:  pip install cryptography")
    sys.exit(2)

try:
    from cryptography.hazmat.primitives.asymmetric import mlkem
except ImportError as e:  # pragma: no cover - environment check
    print(f"error: this version of `cryptography` has no ML-KEM support ({e}).")
    print("       Install a recent one with:  pip install --upgrade cryptography")
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# Constants (crates/hushwire-proto/src/labels.rs and the wire/seal modules)
# ---------------------------------------------------------------------------------------------

# Version byte of bundles, prekey messages and ratchet messages (protocol version 2, §1.4);
# relay frames, audit, transcript and export structures keep PROTOCOL_VERSION = 0x01.
SESSION_VERSION = 2
PROTOCOL_VERSION = 1

SIG_IDENTITY_BINDING = b"Hushwire v1 identity binding"
SIG_SIGNED_PREKEY = b"Hushwire v2 signed prekey"
SIG_KEM_PREKEY = b"Hushwire v2 kem prekey"
FINGERPRINT = b"Hushwire v1 fingerprint"
SAFETY_NUMBER = b"Hushwire v1 safety number"
HANDSHAKE_TRANSCRIPT = b"Hushwire v2 handshake transcript"
KDF_HANDSHAKE = b"Hushwire v2 PQXDH X25519 SHA-256 ML-KEM-1024"
KDF_ROOT = b"Hushwire v2 root chain"
KDF_MESSAGE_KEYS = b"Hushwire v2 message keys"
KDF_SEAL_KEY = b"Hushwire v1 seal key"
KDF_SEAL_KEY_CHECK = b"Hushwire v1 seal key check"
KDF_TRANSCRIPT_RECORD = b"Hushwire v1 transcript record key"
TRANSCRIPT_GENESIS = b"Hushwire v1 transcript genesis"
TRANSCRIPT_RECORD_HASH = b"Hushwire v1 transcript record hash"
SIG_TRANSCRIPT_CHECKPOINT = b"Hushwire v1 transcript checkpoint"
KDF_EXPORT_WRAP = b"Hushwire v2 export key wrap"
KDF_EXPORT_PAYLOAD = b"Hushwire v1 export payload"
SIG_TRANSCRIPT_EXPORT = b"Hushwire v2 transcript export"

BUNDLE_TYPE = 0x10
RATCHET_MESSAGE_TYPE = 0x01
PREKEY_MESSAGE_TYPE = 0x02
SEAL_VERSION = 1
KIND_SESSION = 0x30

KEM_KIND_LAST_RESORT = 0
KEM_KIND_ONE_TIME = 1

X25519_LEN = 32
ED25519_LEN = 32
SIG_LEN = 64
KEM_PK_LEN = 1568
KEM_CT_LEN = 1568
HEADER_PLAINTEXT_LEN = 32 + 4 + 4  # ratchet_key || PN || N (wire-format.md §5)
TAG_LEN = 16
ENCRYPTED_HEADER_LEN = HEADER_PLAINTEXT_LEN + TAG_LEN
MAX_PLAINTEXT_LEN = 64 * 1024
MAX_CIPHERTEXT_LEN = MAX_PLAINTEXT_LEN + TAG_LEN

# Sealed transcripts and exports (crates/hushwire/src/transcript/, docs/transcripts.md).
SEALED_RECORD_TYPE = 0x50
CHECKPOINT_TYPE = 0x51
EXPORT_TYPE = 0x60
EXPORT_VERSION = 2  # the export format's own version (docs/transcripts.md §6.1); 1 is refused
SEALED_HEADER_LEN = 2 + 8 + 32 + 24
RECORD_FIXED_LEN = 1 + 32 + 16 + 8 + 8 + 1 + 4
MAX_CONTENT_LEN = 64 * 1024
MAX_RECORD_CIPHERTEXT_LEN = RECORD_FIXED_LEN + MAX_CONTENT_LEN + TAG_LEN
CHECKPOINT_LEN = 2 + 16 + 8 + 32 + 8 + 1 + 64
CHUNK_LEN = 64 * 1024
MAX_RECIPIENTS = 16
RECIPIENT_LEN = 32 + 32 + 48
MAX_ITEM_LEN = SEALED_HEADER_LEN + 4 + MAX_RECORD_CIPHERTEXT_LEN
ITEM_TRANSCRIPT_START, ITEM_CHECKPOINT, ITEM_RECORD, ITEM_TRANSCRIPT_END, ITEM_EXPORT_END = 0x01, 0x02, 0x03, 0x04, 0xFF
TRANSCRIPT_CHECKPOINT_INTERVAL = 2

SAFETY_NUMBER_ITERATIONS = 5200

# Double Ratchet bounds (crates/hushwire/src/ratchet/{mod,skipped}.rs).
MAX_SKIP = 1000
MAX_JUMP = 25000
MAX_SKIPPED_KEYS = 2000
MAX_SKIPPED_CHAINS = 5
RETIRED_CHAINS = MAX_SKIPPED_CHAINS

# Fixed by the generator (crates/hushwire-vectors/src/lib.rs) and Account (account.rs):
# Account::new(device_id, ..) makes signed prekey id 1 and last-resort ML-KEM prekey id 2; later
# prekeys take ids from 3 upwards.
ALICE_DEVICE_ID = 1
BOB_DEVICE_ID = 7
SIGNED_PREKEY_ID = 1
LAST_RESORT_KEM_ID = 2
BOB_ONE_TIME_PREKEY_ID = 3
BOB_ONE_TIME_KEM_ID = 4

FIRST_PLAINTEXT = "Hello, this is Alice. Is the clinic open today?"
STORAGE_KEY_BYTE = 0x5A


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _hexify(v):
    if isinstance(v, (bytes, bytearray)):
        s = bytes(v).hex()
        return s if len(s) <= 160 else f"{s[:128]}... ({len(v)} bytes)"
    if isinstance(v, (list, tuple)):
        return type(v)(_hexify(x) for x in v)
    if isinstance(v, dict):
        return {k: _hexify(x) for k, x in v.items()}
    return v


def _show(v):
    v = _hexify(v)
    s = v if isinstance(v, str) and not isinstance(v, bool) else repr(v)
    return s if len(s) <= 600 else s[:600] + "..."


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name):
        self.passed += 1
        print(f"ok   {name}")

    def fail(self, name, detail):
        self.failed += 1
        print(f"FAIL {name}")
        for line in detail:
            print(f"       {line}")

    def eq(self, name, expected, actual):
        """`expected` is the published value, `actual` the recomputed one."""
        if expected == actual:
            self.ok(name)
            return True
        detail = [f"expected (published): {_show(expected)}", f"actual (recomputed): {_show(actual)}"]
        if isinstance(expected, (bytes, bytearray)) and isinstance(actual, (bytes, bytearray)):
            n = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
            detail.append(f"lengths {len(expected)} / {len(actual)}, first difference at byte {n}")
        self.fail(name, detail)
        return False

    def true(self, name, cond, detail=""):
        if cond:
            self.ok(name)
        else:
            self.fail(name, [detail] if detail else [])
        return bool(cond)

    def section(self, title, fn, *args):
        """Runs one group of checks; an exception is one failure, and later groups still run."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - report, do not crash
            self.fail(f"{title}: raised {type(e).__name__}", [str(e)])
            return None


def h(s):
    return bytes.fromhex(s)


# ---------------------------------------------------------------------------------------------
# Primitives, all from `cryptography`
# ---------------------------------------------------------------------------------------------


def sha256(data):
    d = hashes.Hash(hashes.SHA256())
    d.update(data)
    return d.finalize()


def sha512(data):
    d = hashes.Hash(hashes.SHA512())
    d.update(data)
    return d.finalize()


def sha3_256(data):
    d = hashes.Hash(hashes.SHA3_256())
    d.update(data)
    return d.finalize()


def sha3_512(data):
    d = hashes.Hash(hashes.SHA3_512())
    d.update(data)
    return d.finalize()


def hkdf(salt, ikm, info, length):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hkdf_expand(prk, info, length):
    """HKDF-Expand alone (RFC 5869 §2.3), for a key that is already pseudorandom."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def hmac_sha256(key, data):
    m = crypto_hmac.HMAC(key, hashes.SHA256())
    m.update(data)
    return m.finalize()


def ed25519_public(seed):
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def ed25519_sign(seed, message):
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def ed25519_verify(public, message, signature):
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def x25519_public(secret):
    # `cryptography` clamps the scalar exactly as x25519-dalek's StaticSecret does.
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def x25519(secret, public):
    out = X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(public))
    if out == bytes(32):
        raise ValueError("X25519 output is all zero (non-contributory key)")
    return out


def mlkem_from_seed(seed):
    return mlkem.MLKEM1024PrivateKey.from_seed_bytes(seed)


def mlkem_public(seed):
    return mlkem_from_seed(seed).public_key().public_bytes_raw()


def aead_encrypt(key, nonce, ad, plaintext):
    """ChaCha20-Poly1305 (RFC 8439): `CAEAD` (exports), and the inner AEAD of XChaCha20."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)


def aead_decrypt(key, nonce, ad, ciphertext):
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        return None


def gcm_encrypt(key, nonce, ad, plaintext):
    """AES-256-GCM (NIST SP 800-38D): message bodies since protocol version 2 (§1.3, §5.3)."""
    return AESGCM(key).encrypt(nonce, plaintext, ad)


def gcm_decrypt(key, nonce, ad, ciphertext):
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        return None


# --- XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03): HChaCha20 in pure Python --------------

_MASK = 0xFFFFFFFF


def _rotl(v, c):
    return ((v << c) & _MASK) | (v >> (32 - c))


def _quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & _MASK
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & _MASK
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & _MASK
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & _MASK
    s[b] = _rotl(s[b] ^ s[c], 7)


def hchacha20(key, nonce16):
    """HChaCha20 (§2.2): ChaCha20's 20 rounds without the final addition; output words 0..3
    and 12..15, little-endian."""
    assert len(key) == 32 and len(nonce16) == 16
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += [int.from_bytes(key[i : i + 4], "little") for i in range(0, 32, 4)]
    s += [int.from_bytes(nonce16[i : i + 4], "little") for i in range(0, 16, 4)]
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)
    return b"".join(w.to_bytes(4, "little") for w in s[0:4] + s[12:16])


def xchacha20poly1305_decrypt(key, nonce24, ad, ciphertext):
    """XChaCha20-Poly1305 (§2.3): subkey = HChaCha20(key, nonce[0:16]), then the IETF
    ChaCha20-Poly1305 with nonce 0^4 || nonce[16:24]."""
    assert len(nonce24) == 24
    subkey = hchacha20(key, nonce24[:16])
    return aead_decrypt(subkey, bytes(4) + nonce24[16:], ad, ciphertext)


def xchacha20poly1305_encrypt(key, nonce24, ad, plaintext):
    subkey = hchacha20(key, nonce24[:16])
    return aead_encrypt(subkey, bytes(4) + nonce24[16:], ad, plaintext)


# ---------------------------------------------------------------------------------------------
# Wire parsing (crates/hushwire-proto/src/codec.rs, bundle.rs, keys.rs; crates/hushwire/src/wire.rs)
# ---------------------------------------------------------------------------------------------


class DecodeError(Exception):
    pass


_P25519 = 2**255 - 19
_SMALL_ORDER = {
    bytes(32),
    (1).to_bytes(32, "little"),
    h("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    h("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    h("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
}


def valid_x25519_public(b):
    """Canonical (bit 255 clear, value < p) and not one of the small-order encodings."""
    return len(b) == 32 and int.from_bytes(b, "little") < _P25519 and b not in _SMALL_ORDER


class Reader:
    def __init__(self, buf):
        self.buf = bytes(buf)
        self.pos = 0

    def take(self, n, field):
        if self.pos + n > len(self.buf):
            raise DecodeError(f"input ended inside `{field}`")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, field):
        return self.take(1, field)[0]

    def u32(self, field):
        return int.from_bytes(self.take(4, field), "big")

    def u64(self, field):
        return int.from_bytes(self.take(8, field), "big")

    def flag(self, field):
        v = self.u8(field)
        if v not in (0, 1):
            raise DecodeError(f"`{field}` is {v}, not 0 or 1")
        return v == 1

    def x25519(self, field):
        k = self.take(32, field)
        if not valid_x25519_public(k):
            raise DecodeError(f"`{field}` is not a valid X25519 public key")
        return k

    def header(self, expected_type, structure, version=PROTOCOL_VERSION):
        v = self.u8("version")
        if v != version:
            raise DecodeError(f"{structure}: unsupported version {v}")
        t = self.u8("type")
        if t != expected_type:
            raise DecodeError(f"{structure}: type {t:#04x}, expected {expected_type:#04x}")

    def expect_empty(self, structure):
        if self.pos != len(self.buf):
            raise DecodeError(f"{len(self.buf) - self.pos} bytes after a complete {structure}")


def read_identity(r):
    """identity key = signing[32] || dh[32] || binding signature[64], binding checked."""
    signing = r.take(ED25519_LEN, "identity signing key")
    dh = r.x25519("identity dh key")
    binding = r.take(SIG_LEN, "identity binding signature")
    if not ed25519_verify(signing, SIG_IDENTITY_BINDING + signing + dh, binding):
        raise DecodeError("identity binding signature does not verify")
    return {"signing": signing, "dh": dh, "binding": binding, "bytes": signing + dh + binding}


def parse_bundle(buf):
    """version || 0x10 || device_id[4] || identity[128] || spk(id[4] key[32] sig[64]) ||
    has_otpk[1] || (otpk id[4] key[32])? || kem(id[4] kind[1] key[1568] sig[64])."""
    r = Reader(buf)
    r.header(BUNDLE_TYPE, "prekey bundle", SESSION_VERSION)
    b = {"device_id": r.u32("device id"), "identity": read_identity(r)}
    b["spk"] = {"id": r.u32("spk id"), "key": r.x25519("spk"), "signature": r.take(SIG_LEN, "spk sig")}
    if r.flag("has one-time prekey"):
        b["otpk"] = {"id": r.u32("otpk id"), "key": r.x25519("otpk")}
    else:
        b["otpk"] = None
    kem = {"id": r.u32("kem id"), "kind": r.u8("kem kind")}
    if kem["kind"] not in (0, 1):
        raise DecodeError("kem prekey kind is not 0 or 1")
    kem["key"] = r.take(KEM_PK_LEN, "kem key")
    kem["signature"] = r.take(SIG_LEN, "kem sig")
    b["kem"] = kem
    r.expect_empty("prekey bundle")
    return b


def read_ratchet_message(r):
    """wire-format.md §6: 0x02 || 0x01 || encrypted_header[56] || ct_len[4] || ct. The header is
    not readable without a header key (§5.3), so the decoder does not interpret it."""
    r.header(RATCHET_MESSAGE_TYPE, "ratchet message", SESSION_VERSION)
    m = {"encrypted_header": r.take(ENCRYPTED_HEADER_LEN, "encrypted header")}
    n = r.u32("ciphertext length")
    if n > MAX_CIPHERTEXT_LEN or n < TAG_LEN:
        raise DecodeError(f"ciphertext length {n} outside [{TAG_LEN}, {MAX_CIPHERTEXT_LEN}]")
    m["ciphertext"] = r.take(n, "ciphertext")
    return m


def parse_message(buf):
    """Returns ("ratchet", message) or ("prekey", prekey-message dict with "message")."""
    if len(buf) < 2 or buf[0] != SESSION_VERSION:
        raise DecodeError("bad version byte")
    r = Reader(buf)
    if buf[1] == RATCHET_MESSAGE_TYPE:
        m = read_ratchet_message(r)
        r.expect_empty("ratchet message")
        return "ratchet", m
    if buf[1] == PREKEY_MESSAGE_TYPE:
        # version || 0x02 || identity[128] || base_key[32] || spk_id[4] || has_otpk[1] ||
        # (otpk_id[4])? || kem_id[4] || kem_ct[1568] || ratchet message
        r.header(PREKEY_MESSAGE_TYPE, "prekey message", SESSION_VERSION)
        p = {"identity": read_identity(r), "base_key": r.x25519("base key"), "spk_id": r.u32("spk id")}
        p["otpk_id"] = r.u32("otpk id") if r.flag("has one-time prekey") else None
        p["kem_id"] = r.u32("kem id")
        p["kem_ciphertext"] = r.take(KEM_CT_LEN, "kem ciphertext")
        p["handshake_bytes"] = buf[: r.pos]
        p["message"] = read_ratchet_message(r)
        r.expect_empty("prekey message")
        return "prekey", p
    raise DecodeError(f"unknown message type {buf[1]:#04x}")


def encode_ratchet_message(encrypted_header, ciphertext):
    """0x02 || 0x01 || encrypted_header[56] || len[4] || ciphertext (wire-format.md §6)."""
    assert len(encrypted_header) == ENCRYPTED_HEADER_LEN
    return bytes([SESSION_VERSION, RATCHET_MESSAGE_TYPE]) + encrypted_header + len(ciphertext).to_bytes(4, "big") + ciphertext


def encode_header_plaintext(ratchet_key, pn, index):
    """header_pt = ratchet_key[32] || previous_chain_length[4] || index[4] (§5.3)."""
    return ratchet_key + pn.to_bytes(4, "big") + index.to_bytes(4, "big")


def decode_header_plaintext(pt):
    """A header that opened: (K, PN, N), K validated as in §3.9."""
    if len(pt) != HEADER_PLAINTEXT_LEN or not valid_x25519_public(pt[:32]):
        raise DecodeError("decrypted header is malformed")
    return pt[:32], int.from_bytes(pt[32:36], "big"), int.from_bytes(pt[36:40], "big")


def body_ad(session_ad, header_pt):
    """message_AD = AD[128] || 0x02 || 0x01 || header_pt[40] (§5.3)."""
    return session_ad + bytes([SESSION_VERSION, RATCHET_MESSAGE_TYPE]) + header_pt


def header_nonce(body):
    """The header's XChaCha20 nonce: the last 16 bytes of the body (its AES-GCM tag) || 0^8."""
    return body[-TAG_LEN:] + bytes(8)


def seal_header(hk, session_ad, header_pt, body):
    """enc_header = XAEAD(HK, tag || 0^8, AD, header_pt), 56 bytes (§5.3)."""
    return xchacha20poly1305_encrypt(hk, header_nonce(body), session_ad, header_pt)


def open_header(hk, session_ad, encrypted_header, body):
    """`try(HK)` of §5.3: the header plaintext, or None."""
    return xchacha20poly1305_decrypt(hk, header_nonce(body), session_ad, encrypted_header)


# ---------------------------------------------------------------------------------------------
# 1. keys.json
# ---------------------------------------------------------------------------------------------


def spk_signed_message(device_id, spk_id, key):
    """SIG_SIGNED_PREKEY || device_id[4] || id[4] || key[32] (§3.5)."""
    return SIG_SIGNED_PREKEY + device_id.to_bytes(4, "big") + spk_id.to_bytes(4, "big") + key


def kem_signed_message(device_id, kind, kem_id, key):
    """SIG_KEM_PREKEY || device_id[4] || kind[1] || id[4] || key[1568] (§3.7)."""
    return SIG_KEM_PREKEY + device_id.to_bytes(4, "big") + bytes([kind]) + kem_id.to_bytes(4, "big") + key


def derive_account(draws, device_id):
    """Account::new draws: Ed25519 seed (32), X25519 identity secret (32), signed prekey secret
    (32), last-resort ML-KEM-1024 seed d||z (64)."""
    ed_seed, dh_secret, spk_secret, kem_seed = (h(d) for d in draws)
    signing = ed25519_public(ed_seed)
    dh = x25519_public(dh_secret)
    binding = ed25519_sign(ed_seed, SIG_IDENTITY_BINDING + signing + dh)
    spk_pub = x25519_public(spk_secret)
    spk_sig = ed25519_sign(ed_seed, spk_signed_message(device_id, SIGNED_PREKEY_ID, spk_pub))
    kem_pub = mlkem_public(kem_seed)
    kem_sig = ed25519_sign(ed_seed, kem_signed_message(device_id, KEM_KIND_LAST_RESORT, LAST_RESORT_KEM_ID, kem_pub))
    return {
        "ed_seed": ed_seed,
        "dh_secret": dh_secret,
        "spk_secret": spk_secret,
        "kem_seed": kem_seed,
        "signing": signing,
        "dh": dh,
        "binding": binding,
        "identity": signing + dh + binding,
        "public_bytes": signing + dh,
        "fingerprint": sha256(FINGERPRINT + signing + dh),
        "spk_pub": spk_pub,
        "spk_sig": spk_sig,
        "spk_encoded": SIGNED_PREKEY_ID.to_bytes(4, "big") + spk_pub + spk_sig,
        "kem_pub": kem_pub,
        "kem_sig": kem_sig,
        "kem_encoded": LAST_RESORT_KEM_ID.to_bytes(4, "big") + bytes([KEM_KIND_LAST_RESORT]) + kem_pub + kem_sig,
    }


def safety_half(public_bytes):
    digest = sha512(SAFETY_NUMBER + public_bytes)
    for _ in range(SAFETY_NUMBER_ITERATIONS):
        digest = sha512(digest + public_bytes)
    return "".join(f"{int.from_bytes(digest[i:i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


def safety_number(a_public, b_public):
    x, y = safety_half(a_public), safety_half(b_public)
    return x + y if x <= y else y + x


def check_account(c, who, j, draws_key="draws"):
    draws = j[draws_key]
    c.eq(f"keys: {who} draw sizes", [32, 32, 32, 64], [len(h(d)) for d in draws])
    device_id = ALICE_DEVICE_ID if who == "alice" else BOB_DEVICE_ID
    a = derive_account(draws, device_id)
    a["device_id"] = device_id
    c.eq(f"keys: {who} device_id", device_id, j["device_id"])
    c.eq(f"keys: {who} identity signing key", h(j["identity_signing_key"]), a["signing"])
    c.eq(f"keys: {who} identity dh key", h(j["identity_dh_key"]), a["dh"])
    c.eq(f"keys: {who} identity binding signature", h(j["identity_binding_signature"]), a["binding"])
    c.eq(f"keys: {who} identity key encoding", h(j["identity_key"]), a["identity"])
    c.eq(f"keys: {who} fingerprint", j["fingerprint"], a["fingerprint"].hex())
    spk = j["signed_prekey"]
    c.eq(f"keys: {who} signed prekey id", SIGNED_PREKEY_ID, spk["id"])
    c.eq(f"keys: {who} signed prekey public", h(spk["public"]), a["spk_pub"])
    c.eq(f"keys: {who} signed prekey signature", h(spk["signature"]), a["spk_sig"])
    c.eq(f"keys: {who} signed prekey encoding", h(spk["encoded"]), a["spk_encoded"])
    kem = j["last_resort_kem_prekey"]
    c.eq(f"keys: {who} last-resort kem prekey id/kind", (LAST_RESORT_KEM_ID, "last-resort"), (kem["id"], kem["kind"]))
    c.eq(f"keys: {who} last-resort kem prekey public (ML-KEM-1024 from seed)", h(kem["public"]), a["kem_pub"])
    c.eq(f"keys: {who} last-resort kem prekey signature", h(kem["signature"]), a["kem_sig"])
    c.eq(f"keys: {who} last-resort kem prekey encoding", h(kem["encoded"]), a["kem_encoded"])
    return a


def check_keys(c, keys):
    alice = check_account(c, "alice", keys["alice"])
    bob = check_account(c, "bob", keys["bob"]["account"])

    otpk = keys["bob"]["one_time_prekey"]
    c.eq("keys: bob one-time prekey draw sizes", [32], [len(h(d)) for d in otpk["draws"]])
    otpk_secret = h(otpk["draws"][0])
    otpk_pub = x25519_public(otpk_secret)
    otpk_enc = BOB_ONE_TIME_PREKEY_ID.to_bytes(4, "big") + otpk_pub
    c.eq("keys: bob one-time prekey id", BOB_ONE_TIME_PREKEY_ID, otpk["id"])
    c.eq("keys: bob one-time prekey public", h(otpk["public"]), otpk_pub)
    c.eq("keys: bob one-time prekey encoding", h(otpk["encoded"]), otpk_enc)

    okem = keys["bob"]["one_time_kem_prekey"]
    c.eq("keys: bob one-time kem prekey draw sizes", [64], [len(h(d)) for d in okem["draws"]])
    okem_seed = h(okem["draws"][0])
    okem_pub = mlkem_public(okem_seed)
    okem_sig = ed25519_sign(bob["ed_seed"], kem_signed_message(BOB_DEVICE_ID, KEM_KIND_ONE_TIME, BOB_ONE_TIME_KEM_ID, okem_pub))
    okem_enc = BOB_ONE_TIME_KEM_ID.to_bytes(4, "big") + bytes([KEM_KIND_ONE_TIME]) + okem_pub + okem_sig
    c.eq("keys: bob one-time kem prekey id/kind", (BOB_ONE_TIME_KEM_ID, "one-time"), (okem["id"], okem["kind"]))
    c.eq("keys: bob one-time kem prekey public (ML-KEM-1024 from seed)", h(okem["public"]), okem_pub)
    c.eq("keys: bob one-time kem prekey signature", h(okem["signature"]), okem_sig)
    c.eq("keys: bob one-time kem prekey encoding", h(okem["encoded"]), okem_enc)

    # The bundle Account::prekey_bundle builds: the one-time ML-KEM prekey is preferred over the
    # last-resort one.
    bundle = (
        bytes([SESSION_VERSION, BUNDLE_TYPE])
        + BOB_DEVICE_ID.to_bytes(4, "big")
        + bob["identity"]
        + bob["spk_encoded"]
        + b"\x01"
        + otpk_enc
        + okem_enc
    )
    c.eq("keys: bob_bundle encoding", h(keys["bob_bundle"]), bundle)
    parsed = parse_bundle(h(keys["bob_bundle"]))
    c.true(
        "keys: bob_bundle parses and its signatures verify under bob's identity for the bundle's device_id",
        ed25519_verify(
            parsed["identity"]["signing"],
            spk_signed_message(parsed["device_id"], parsed["spk"]["id"], parsed["spk"]["key"]),
            parsed["spk"]["signature"],
        )
        and ed25519_verify(
            parsed["identity"]["signing"],
            kem_signed_message(parsed["device_id"], parsed["kem"]["kind"], parsed["kem"]["id"], parsed["kem"]["key"]),
            parsed["kem"]["signature"],
        ),
    )
    c.true(
        "keys: bob's prekey signatures do not verify for another device id (device id is signed)",
        not ed25519_verify(
            parsed["identity"]["signing"],
            spk_signed_message(ALICE_DEVICE_ID, parsed["spk"]["id"], parsed["spk"]["key"]),
            parsed["spk"]["signature"],
        )
        and not ed25519_verify(
            parsed["identity"]["signing"],
            kem_signed_message(ALICE_DEVICE_ID, parsed["kem"]["kind"], parsed["kem"]["id"], parsed["kem"]["key"]),
            parsed["kem"]["signature"],
        ),
    )

    c.eq("keys: safety number", keys["safety_number"], safety_number(alice["public_bytes"], bob["public_bytes"]))
    c.eq(
        "keys: safety number is symmetric",
        safety_number(alice["public_bytes"], bob["public_bytes"]),
        safety_number(bob["public_bytes"], alice["public_bytes"]),
    )

    bob["otpk_secret"] = otpk_secret
    bob["otpk_pub"] = otpk_pub
    bob["okem_seed"] = okem_seed
    bob["okem_pub"] = okem_pub
    bob["bundle"] = bundle
    return alice, bob


# ---------------------------------------------------------------------------------------------
# The Double Ratchet model (ratchet/mod.rs, ratchet/keys.rs, ratchet/skipped.rs, session.rs)
# ---------------------------------------------------------------------------------------------


def kdf_rk(root, dh_out):
    """KDF_RK (§5.2): HKDF-SHA256(salt = RK, ikm = DH output, info = KDF_ROOT, 96)
    = RK' || CK || NHK (NHK: the header key of the chain after the one CK starts)."""
    okm = hkdf(root, dh_out, KDF_ROOT, 96)
    return okm[:32], okm[32:64], okm[64:]


def message_key(ck):
    return hmac_sha256(ck, b"\x01")


def next_chain_key(ck):
    return hmac_sha256(ck, b"\x02")


def aead_key_nonce(mk):
    # protocol.md §5.2: HKDF-Expand only; MK is already a uniformly random key.
    okm = hkdf_expand(mk, KDF_MESSAGE_KEYS, 44)
    return okm[:32], okm[32:]


class RatchetError(Exception):
    pass


class Party:
    """One side's session state, kept independently of the Rust implementation: the Double
    Ratchet with header encryption of protocol.md §5.1–§5.4."""

    def __init__(self, name, ad, root, our_secret, sending_ck, hks, nhks, nhkr,
                 pending_handshake=None, handshake_digest=None, base_key=None):
        self.name = name
        self.ad = ad
        self.root = root
        self.our_secret = our_secret
        self.our_pub = x25519_public(our_secret)
        self.sending = None if sending_ck is None else [sending_ck, 0]  # [CKs, Ns]
        self.hks = hks  # header key of the sending chain; None exactly when `sending` is
        self.nhks = nhks  # header key of our next sending chain
        self.pn = 0
        self.receiving = None  # [Kr, HKr, CKr, Nr]
        self.nhkr = nhkr  # header key of the peer's next sending chain
        self.retired = []  # [(ratchet key, header key)], oldest first
        self.skipped = []  # [ratchet key, index, MK], oldest first
        self.discarded = 0
        self.pending_handshake = pending_handshake  # initiator: handshake part, until a reply decrypts
        self.handshake_digest = handshake_digest  # responder: digest of the accepted handshake part
        self.base_key = base_key

    def encrypt(self, plaintext):
        """§5.3 Encrypt: body = AES-256-GCM(key, nonce, AD || 0x02 || 0x01 || header_pt),
        enc_header = XAEAD(HKs, tag || 0^8, AD, header_pt)."""
        if self.sending is None or self.hks is None:
            raise RatchetError("no sending chain")
        ck, n = self.sending
        header_pt = encode_header_plaintext(self.our_pub, self.pn, n)
        mk = message_key(ck)
        key, nonce = aead_key_nonce(mk)
        body = gcm_encrypt(key, nonce, body_ad(self.ad, header_pt), plaintext)
        enc_header = seal_header(self.hks, self.ad, header_pt, body)
        self.sending = [next_chain_key(ck), n + 1]
        rm = encode_ratchet_message(enc_header, body)
        wire = (self.pending_handshake + rm) if self.pending_handshake is not None else rm
        trace = {
            "chain_key": ck,
            "message_key": mk,
            "header_key": self.hks,
            "aead_key": key,
            "nonce": nonce,
            "root_key": self.root,
            "ratchet_key": self.our_pub,
            "pn": self.pn,
            "index": n,
            "header_plaintext": header_pt,
            "encrypted_header": enc_header,
        }
        return wire, trace

    def _add_skipped(self, ratchet_key, keys, given_up=0):
        """Append one chain's kept keys, then evict (§5.4)."""
        self.discarded += given_up
        for idx, mk in keys:
            self.skipped.append([ratchet_key, idx, mk])
        while len(self.skipped) > MAX_SKIPPED_KEYS:
            self.skipped.pop(0)
            self.discarded += 1

        def runs():
            return sum(1 for i, e in enumerate(self.skipped) if i == 0 or self.skipped[i - 1][0] != e[0])

        while runs() > MAX_SKIPPED_CHAINS:
            oldest = self.skipped[0][0]
            while self.skipped and self.skipped[0][0] == oldest:
                self.skipped.pop(0)
                self.discarded += 1

    def _prune_retired(self):
        """§5.4: keep the newest RETIRED_CHAINS retired chains, and any older one whose ratchet
        key still tags a stored key."""
        keep_from = max(len(self.retired) - RETIRED_CHAINS, 0)
        tagged = {e[0] for e in self.skipped}
        self.retired = [r for i, r in enumerate(self.retired) if i >= keep_from or r[0] in tagged]

    @staticmethod
    def _skip(ck, start, until):
        """Walks a chain from `start` to `until` (at most MAX_JUMP): the kept message keys (the
        last MAX_SKIP indices before `until`), how many earlier ones were given up, and the chain
        key at `until` (protocol.md §5.3)."""
        if until - start > MAX_JUMP:
            raise RatchetError("too far ahead")
        keep_from = max(until - MAX_SKIP, start)
        given_up = keep_from - start
        keys = []
        while start < until:
            if start >= keep_from:
                keys.append((start, message_key(ck)))
            ck = next_chain_key(ck)
            start += 1
        return keys, given_up, ck

    def find_header(self, m):
        """§5.3 "Finding the header": try HKr (current), then each retired chain newest first,
        then NHKr (next); the first that opens wins."""
        body = m["ciphertext"]
        tries = []
        if self.receiving is not None:
            tries.append(("current", self.receiving[1]))
        tries += [("retired", hk) for _, hk in reversed(self.retired)]
        tries.append(("next", self.nhkr))
        for which, hk in tries:
            pt = open_header(hk, self.ad, m["encrypted_header"], body)
            if pt is not None:
                try:
                    return which, pt, decode_header_plaintext(pt)
                except DecodeError:
                    raise RatchetError("authentication failed (bad ratchet key in header)")
        raise RatchetError("authentication failed (no header key opens the header)")

    def decrypt(self, wire, draws):
        """§5.3 Decrypt; `draws` is an iterator over the receiver's published RNG draws (one new
        ratchet secret per DH ratchet step). Returns (plaintext, stepped)."""
        kind, m = parse_message(wire)
        if kind == "prekey":
            if m["base_key"] != self.base_key:
                raise RatchetError("prekey message of another session")
            if self.handshake_digest is None or sha256(m["handshake_bytes"]) != self.handshake_digest:
                raise RatchetError("prekey message's handshake part differs from the session's")
            m = m["message"]
        which, header_pt, (rk, pn, idx) = self.find_header(m)
        ad = body_ad(self.ad, header_pt)

        def open_with(mk):
            key, nonce = aead_key_nonce(mk)
            pt = gcm_decrypt(key, nonce, ad, m["ciphertext"])
            if pt is None:
                raise RatchetError("authentication failed")
            return pt

        if which == "current":
            if rk != self.receiving[0]:
                raise RatchetError("authentication failed (ratchet key changed within a chain)")
            _, hkr, ck, n = self.receiving
            if idx >= n:
                # Rule 1: the current chain, at or after the next expected index.
                keys, given_up, ck = self._skip(ck, n, idx)
                pt = open_with(message_key(ck))
                self.receiving = [rk, hkr, next_chain_key(ck), idx + 1]
                self._add_skipped(rk, keys, given_up)
                self.pending_handshake = None
                return pt, False

        if which in ("current", "retired"):
            # Rule 2: a kept key; rule 3: otherwise a replay.
            for pos, (srk, sidx, smk) in enumerate(self.skipped):
                if srk == rk and sidx == idx:
                    pt = open_with(smk)
                    del self.skipped[pos]
                    self._prune_retired()
                    self.pending_handshake = None
                    return pt, False
            raise RatchetError(f"duplicate message ({which} chain, index {idx})")

        # Rule 4: the header opened under NHKr: a new chain, DH ratchet step.
        if (self.receiving is not None and rk == self.receiving[0]) or any(rk == r for r, _ in self.retired):
            raise RatchetError("duplicate message (known ratchet key under the next header key)")
        if self.receiving is not None:
            old_rk, old_hk, old_ck, old_n = self.receiving
            if pn < old_n:
                raise RatchetError("inconsistent previous chain length")
            if pn - old_n > MAX_JUMP:
                finished, finished_given_up = [], pn - old_n  # not walked: all given up
            else:
                finished, finished_given_up, _ = self._skip(old_ck, old_n, pn)
        else:
            finished, finished_given_up = [], 0
        root, recv_ck, next_hkr = kdf_rk(self.root, x25519(self.our_secret, rk))
        keys, given_up, recv_ck = self._skip(recv_ck, 0, idx)
        pt = open_with(message_key(recv_ck))
        new_secret = next(draws, None)
        if new_secret is None:
            raise RatchetError("DH ratchet step needs a draw, none published")
        new_secret = h(new_secret)
        if len(new_secret) != 32:
            raise RatchetError("ratchet secret draw is not 32 bytes")
        new_root, send_ck, next_hks = kdf_rk(root, x25519(new_secret, rk))
        # Commit, in the order of §5.3 step 4.7.
        if self.receiving is not None:
            self._add_skipped(old_rk, finished, finished_given_up)
            self.retired.append((old_rk, old_hk))
        self._add_skipped(rk, keys, given_up)
        self._prune_retired()
        self.pn = self.sending[1] if self.sending is not None else 0
        self.root = new_root
        self.our_secret = new_secret
        self.our_pub = x25519_public(new_secret)
        self.sending = [send_ck, 0]
        self.hks, self.nhks = self.nhks, next_hks
        self.receiving = [rk, self.nhkr, next_chain_key(recv_ck), idx + 1]
        self.nhkr = next_hkr
        self.pending_handshake = None
        return pt, True

    def gaps(self):
        """Missing messages per chain, chains in the order first seen, indices ascending."""
        out = []
        for rk, idx, _ in self.skipped:
            for g in out:
                if g["chain"] == rk.hex():
                    g["missing"].append(idx)
                    break
            else:
                out.append({"chain": rk.hex(), "missing": [idx]})
        for g in out:
            g["missing"].sort()
        return out


# ---------------------------------------------------------------------------------------------
# 2. handshake.json
# ---------------------------------------------------------------------------------------------


def handshake_transcript(ik_a, ik_b, device_id_b, ek_a, spk_id, spk, opk_id, opk, pqpk_id, pqpk, ct):
    """The bytes hashed into TH (§4.4): HANDSHAKE_TRANSCRIPT || IK_A.signing || IK_A.dh ||
    IK_B.signing || IK_B.dh || device_id_B[4] || EK_A || spk_id[4] || SPK_B || has_opk[1] ||
    (opk_id[4] || OPK_B)? || pqpk_id[4] || PQPK_B[1568] || CT[1568]."""
    out = HANDSHAKE_TRANSCRIPT + ik_a + ik_b + device_id_b.to_bytes(4, "big") + ek_a
    out += spk_id.to_bytes(4, "big") + spk
    out += (b"\x01" + opk_id.to_bytes(4, "big") + opk) if opk_id is not None else b"\x00"
    return out + pqpk_id.to_bytes(4, "big") + pqpk + ct


def handshake_keys(ikm, th):
    """SK || HK_A || NHK_B = HKDF(salt = 0^32, ikm, info = KDF_HANDSHAKE || TH, L = 96) (§4.4)."""
    okm = hkdf(bytes(32), ikm, KDF_HANDSHAKE + th, 96)
    return okm[:32], okm[32:64], okm[64:]


def check_handshake(c, hs, keys, alice, bob):
    c.eq("handshake: bundle is keys.json bob_bundle", h(keys["bob_bundle"]), h(hs["bundle"]))
    bundle = parse_bundle(h(hs["bundle"]))
    c.eq(
        "handshake: bundle offers spk 1, one-time prekey 3, one-time kem prekey 4",
        (SIGNED_PREKEY_ID, BOB_ONE_TIME_PREKEY_ID, BOB_ONE_TIME_KEM_ID, KEM_KIND_ONE_TIME),
        (bundle["spk"]["id"], bundle["otpk"]["id"] if bundle["otpk"] else None, bundle["kem"]["id"], bundle["kem"]["kind"]),
    )

    draws = hs["initiator_draws"]
    c.eq("handshake: initiator draw sizes (EK, ML-KEM m, ratchet secret)", [32, 32, 32], [len(h(d)) for d in draws])
    ek_secret, kem_m, ratchet_secret = (h(d) for d in draws)

    base_key = x25519_public(ek_secret)
    c.eq("handshake: base_key", h(hs["base_key"]), base_key)
    spk_b, ik_b, opk_b = bundle["spk"]["key"], bundle["identity"]["dh"], bundle["otpk"]["key"]
    dh1 = x25519(alice["dh_secret"], spk_b)
    dh2 = x25519(ek_secret, ik_b)
    dh3 = x25519(ek_secret, spk_b)
    dh4 = x25519(ek_secret, opk_b)
    c.eq("handshake: dh1 = DH(IK_A, SPK_B)", h(hs["dh1"]), dh1)
    c.eq("handshake: dh2 = DH(EK_A, IK_B)", h(hs["dh2"]), dh2)
    c.eq("handshake: dh3 = DH(EK_A, SPK_B)", h(hs["dh3"]), dh3)
    c.eq("handshake: dh4 = DH(EK_A, OPK_B)", h(hs["dh4"]) if hs["dh4"] else None, dh4)
    c.eq(
        "handshake: responder's DHs (DH(SPK_B, IK_A), DH(IK_B, EK_A), DH(SPK_B, EK_A), DH(OPK_B, EK_A)) agree",
        (dh1, dh2, dh3, dh4),
        (
            x25519(bob["spk_secret"], alice["dh"]),
            x25519(bob["dh_secret"], base_key),
            x25519(bob["spk_secret"], base_key),
            x25519(bob["otpk_secret"], base_key),
        ),
    )

    # ML-KEM: FIPS 203 ML-KEM.Encaps_internal(ek, m) gives (K, r) = G(m || H(ek)) and
    # c = K-PKE.Encrypt(ek, m, r). Decapsulation recovers m' from c, re-encrypts, and returns K'
    # = G(m' || H(ek))[0:32] only if the re-encryption equals c (else the implicit-rejection
    # value J(z || c)). So: decaps(c) == G(m || H(ek))[0:32] == published secret shows that c
    # is exactly Encaps_internal(ek, m), without a deterministic encapsulation API.
    kem_ct = h(hs["kem_ciphertext"])
    kem_ss = h(hs["kem_shared_secret"])
    c.eq("handshake: kem_ciphertext length", KEM_CT_LEN, len(kem_ct))
    c.eq(
        "handshake: kem_shared_secret = Decaps(bob one-time ML-KEM key, kem_ciphertext)",
        kem_ss,
        mlkem_from_seed(bob["okem_seed"]).decapsulate(kem_ct),
    )
    c.eq(
        "handshake: kem_shared_secret = G(m || H(ek))[0:32] for the drawn m (FIPS 203 Encaps_internal)",
        kem_ss,
        sha3_512(kem_m + sha3_256(bundle["kem"]["key"]))[:32],
    )

    # §4.4: the transcript hash TH over every public value of the handshake, then
    # SK || HK_A || NHK_B = HKDF(0^32, 0xFF^32 || DH1..DH4 || SS, KDF_HANDSHAKE || TH, 96).
    transcript = handshake_transcript(
        alice["public_bytes"], bundle["identity"]["signing"] + bundle["identity"]["dh"], bundle["device_id"], base_key,
        bundle["spk"]["id"], spk_b, bundle["otpk"]["id"], opk_b, bundle["kem"]["id"], bundle["kem"]["key"], kem_ct,
    )
    c.eq("handshake: transcript = HANDSHAKE_TRANSCRIPT || IK_A || IK_B || device_id_B || EK_A || spk_id || SPK_B || "
         "0x01 || opk_id || OPK_B || pqpk_id || PQPK_B || CT", h(hs["transcript"]), transcript)
    c.eq("handshake: transcript is 3409 bytes (with a one-time prekey)", 3409, len(transcript))
    th = sha256(transcript)
    c.eq("handshake: transcript_hash = SHA-256(transcript)", h(hs["transcript_hash"]), th)
    ikm = b"\xff" * 32 + dh1 + dh2 + dh3 + dh4 + kem_ss
    sk, hk_a, nhk_b = handshake_keys(ikm, th)
    c.eq("handshake: shared_secret = okm[0..32]", h(hs["shared_secret"]), sk)
    c.eq("handshake: initiator_header_key HK_A = okm[32..64]", h(hs["initiator_header_key"]), hk_a)
    c.eq("handshake: responder_header_key NHK_B = okm[64..96]", h(hs["responder_header_key"]), nhk_b)
    ad = alice["public_bytes"] + bob["public_bytes"]
    c.eq("handshake: associated_data = IK_A.signing||IK_A.dh||IK_B.signing||IK_B.dh", h(hs["associated_data"]), ad)

    # Alice's Double Ratchet initialisation (§5.1): (RK, CKs, NHKs) = KDF_RK(SK, DH(a_1, SPK_B)),
    # HKs = HK_A, NHKr = NHK_B.
    root, cks, nhks = kdf_rk(sk, x25519(ratchet_secret, spk_b))
    fm = hs["first_message"]
    c.eq("handshake: first message sending_chain_key", h(fm["sending_chain_key"]), cks)
    c.eq("handshake: first message root_key", h(fm["root_key"]), root)

    handshake_part = (
        bytes([SESSION_VERSION, PREKEY_MESSAGE_TYPE])
        + alice["identity"]
        + base_key
        + SIGNED_PREKEY_ID.to_bytes(4, "big")
        + b"\x01"
        + BOB_ONE_TIME_PREKEY_ID.to_bytes(4, "big")
        + BOB_ONE_TIME_KEM_ID.to_bytes(4, "big")
        + kem_ct
    )
    alice_party = Party("alice", ad, root, ratchet_secret, cks, hk_a, nhks, nhk_b,
                        pending_handshake=handshake_part, base_key=base_key)
    wire, trace = alice_party.encrypt(FIRST_PLAINTEXT.encode())
    c.eq("handshake: first message plaintext", FIRST_PLAINTEXT, fm["plaintext"])
    c.eq("handshake: first message message_key = HMAC(CK, 0x01)", h(fm["message_key"]), trace["message_key"])
    c.eq("handshake: first message header_key = HK_A", h(fm["header_key"]), trace["header_key"])
    c.eq("handshake: first message aead_key", h(fm["aead_key"]), trace["aead_key"])
    c.eq("handshake: first message nonce", h(fm["nonce"]), trace["nonce"])
    c.eq("handshake: first message encrypted_header = XAEAD(HK_A, tag || 0^8, AD, header_pt)",
         h(fm["encrypted_header"]), trace["encrypted_header"])
    c.eq("handshake: first message wire (recomputed byte for byte)", h(fm["wire"]), wire)

    # Parse the published wire and check every field.
    published = h(fm["wire"])
    kind, p = parse_message(published)
    c.eq("handshake: first message is a prekey message (type 0x02)", "prekey", kind)
    c.eq("handshake: prekey message identity = alice identity key", alice["identity"], p["identity"]["bytes"])
    c.eq("handshake: prekey message base key", base_key, p["base_key"])
    c.eq(
        "handshake: prekey message ids (spk, one-time prekey, kem prekey)",
        (SIGNED_PREKEY_ID, BOB_ONE_TIME_PREKEY_ID, BOB_ONE_TIME_KEM_ID),
        (p["spk_id"], p["otpk_id"], p["kem_id"]),
    )
    c.eq("handshake: prekey message kem ciphertext", kem_ct, p["kem_ciphertext"])
    rm = p["message"]
    c.eq("handshake: embedded ratchet message's encrypted_header (bytes 2..58)", h(fm["encrypted_header"]),
         rm["encrypted_header"])
    header_pt = open_header(h(fm["header_key"]), h(hs["associated_data"]), rm["encrypted_header"], rm["ciphertext"])
    c.eq(
        "handshake: encrypted header opens under header_key with nonce = body tag || 0^8, AD = associated_data, "
        "to (ratchet key, pn, index)",
        (x25519_public(ratchet_secret), 0, 0),
        decode_header_plaintext(header_pt) if header_pt is not None else None,
    )
    pt = None
    if header_pt is not None:
        pt = gcm_decrypt(h(fm["aead_key"]), h(fm["nonce"]), body_ad(h(hs["associated_data"]), header_pt), rm["ciphertext"])
    c.eq("handshake: first message body opens (AES-256-GCM, AD = associated_data || 0x02 || 0x01 || header_pt)",
         fm["plaintext"].encode(), pt)
    # The header's nonce is the body's tag: an altered body no longer lets the header open; nor
    # does the responder's header key, or another session's AD.
    altered = rm["ciphertext"][:-1] + bytes([rm["ciphertext"][-1] ^ 1])
    c.true("handshake: the header does not open once the body's tag is altered, under NHK_B, or with another AD",
           open_header(h(fm["header_key"]), h(hs["associated_data"]), rm["encrypted_header"], altered) is None
           and open_header(h(hs["responder_header_key"]), h(hs["associated_data"]), rm["encrypted_header"],
                           rm["ciphertext"]) is None
           and open_header(h(fm["header_key"]), bob["public_bytes"] + alice["public_bytes"], rm["encrypted_header"],
                           rm["ciphertext"]) is None)
    v1 = bytearray(published)
    v1[0] = 1
    try:
        parse_message(bytes(v1))
        c.fail("handshake: a version-1 prekey message is refused", ["parsed"])
    except DecodeError:
        c.ok("handshake: a version-1 prekey message is refused")
    c.eq(
        "handshake: handshake_digest = SHA-256(prekey message before the ratchet message)",
        h(fm["handshake_digest"]),
        sha256(p["handshake_bytes"]),
    )
    c.eq("handshake: handshake part as recomputed", handshake_part, p["handshake_bytes"])

    # Bob accepts (§4.8): his DHs from his secrets, SS by Decaps, TH from the prekey message, his
    # own device id and the prekeys it names; RK = SK, ratchet key pair = SPK_B, NHKs = NHK_B,
    # NHKr = HK_A.
    bob_th = sha256(handshake_transcript(
        p["identity"]["signing"] + p["identity"]["dh"], bob["public_bytes"], BOB_DEVICE_ID, p["base_key"],
        p["spk_id"], bob["spk_pub"], p["otpk_id"], bob["otpk_pub"], p["kem_id"], bob["okem_pub"], p["kem_ciphertext"],
    ))
    c.eq("handshake: responder computes the same transcript_hash", th, bob_th)
    bob_sk, bob_hk_a, bob_nhk_b = handshake_keys(
        b"\xff" * 32
        + x25519(bob["spk_secret"], p["identity"]["dh"])
        + x25519(bob["dh_secret"], p["base_key"])
        + x25519(bob["spk_secret"], p["base_key"])
        + x25519(bob["otpk_secret"], p["base_key"])
        + mlkem_from_seed(bob["okem_seed"]).decapsulate(p["kem_ciphertext"]),
        bob_th,
    )
    c.eq("handshake: responder derives the same SK, HK_A, NHK_B", (sk, hk_a, nhk_b), (bob_sk, bob_hk_a, bob_nhk_b))
    bob_ad = p["identity"]["signing"] + p["identity"]["dh"] + bob["public_bytes"]
    bob_party = Party(
        "bob", bob_ad, bob_sk, bob["spk_secret"], None, None, bob_nhk_b, bob_hk_a,
        handshake_digest=sha256(p["handshake_bytes"]), base_key=p["base_key"],
    )
    rdraws = hs["responder_draws"]
    c.eq("handshake: responder draw sizes (first ratchet secret)", [32], [len(h(d)) for d in rdraws])
    it = iter(rdraws)
    pt, stepped = bob_party.decrypt(published, it)
    c.eq("handshake: responder decrypts the first message", fm["plaintext"].encode(), pt)
    c.true("handshake: responder made one DH ratchet step and used every responder draw", stepped and next(it, None) is None)
    c.eq("handshake: responder's receiving chain (key, header key) equals alice's sending chain after message 0",
         (alice_party.sending[0], alice_party.hks), (bob_party.receiving[2], bob_party.receiving[1]))
    c.eq("handshake: responder sends under HKs = NHK_B, which is alice's NHKr", (nhk_b, nhk_b),
         (bob_party.hks, alice_party.nhkr))
    return alice_party, bob_party


# ---------------------------------------------------------------------------------------------
# 3. conversation.json
# ---------------------------------------------------------------------------------------------


def check_conversation(c, conv, alice_party, bob_party):
    parties = {"alice": alice_party, "bob": bob_party}
    messages = conv["messages"]
    c.eq("conversation: 30 messages numbered 0..29", list(range(30)), [m["number"] for m in messages])
    sent = {}  # number -> our wire

    # The JSON lists sends in number order and deliveries in delivery order; `schedule` gives
    # how they interleave, and is followed as published.
    schedule = build_schedule(conv)

    deliveries = conv["deliveries"]
    d_iter = iter(deliveries)
    for ev in schedule:
        if ev[0] == "send":
            n = ev[1]
            m = messages[n]
            party = parties[m["sender"]]
            was_prekey = party.pending_handshake is not None
            wire, t = party.encrypt(m["plaintext"].encode())
            sent[n] = wire
            tag = f"conversation: message {n} ({m['sender']})"
            c.eq(f"{tag} plaintext", f"message {n} from {m['sender']}", m["plaintext"])
            c.eq(f"{tag} header (ratchet_key, pn, index)", (h(m["ratchet_key"]), m["previous_chain_length"], m["index"]),
                 (t["ratchet_key"], t["pn"], t["index"]))
            c.eq(f"{tag} chain_key", h(m["chain_key"]), t["chain_key"])
            c.eq(f"{tag} message_key", h(m["message_key"]), t["message_key"])
            c.eq(f"{tag} header_key (HKs)", h(m["header_key"]), t["header_key"])
            c.eq(f"{tag} aead_key", h(m["aead_key"]), t["aead_key"])
            c.eq(f"{tag} nonce", h(m["nonce"]), t["nonce"])
            c.eq(f"{tag} encrypted_header = XAEAD(HKs, tag || 0^8, AD, header_pt)", h(m["encrypted_header"]),
                 t["encrypted_header"])
            c.eq(f"{tag} root_key_after", h(m["root_key_after"]), t["root_key"])
            c.eq(f"{tag} wire (recomputed byte for byte)", h(m["wire"]), wire)
            # Independently of our encryption: parse the published bytes and open them with the
            # published keys.
            kind, p = parse_message(h(m["wire"]))
            c.eq(f"{tag} wire type", "prekey" if was_prekey else "ratchet", kind)
            rm = p["message"] if kind == "prekey" else p
            c.eq(f"{tag} encrypted_header is bytes 2..58 of the ratchet message", h(m["encrypted_header"]),
                 rm["encrypted_header"])
            header_pt = open_header(h(m["header_key"]), party.ad, rm["encrypted_header"], rm["ciphertext"])
            c.eq(f"{tag} header opens under header_key to (ratchet_key, previous_chain_length, index)",
                 (h(m["ratchet_key"]), m["previous_chain_length"], m["index"]),
                 decode_header_plaintext(header_pt) if header_pt is not None else None)
            pt = None
            if header_pt is not None:
                pt = gcm_decrypt(h(m["aead_key"]), h(m["nonce"]), body_ad(party.ad, header_pt), rm["ciphertext"])
            c.eq(f"{tag} published aead_key/nonce open the body with AD = associated_data || 0x02 || 0x01 || header_pt",
                 m["plaintext"].encode(), pt)
        else:
            d = next(d_iter)
            n = d["number"]
            m = messages[n]
            receiver = "bob" if m["sender"] == "alice" else "alice"
            tag = f"conversation: delivery of {n} to {receiver}:"
            c.eq(f"{tag} receiver field", receiver, d["receiver"])
            party = parties[receiver]
            draws = iter(d["receiver_draws"])
            try:
                pt, stepped = party.decrypt(h(m["wire"]), draws)
            except (RatchetError, DecodeError, ValueError) as e:
                c.fail(f"{tag} decrypts", [f"{type(e).__name__}: {e}"])
                continue
            c.eq(f"{tag} decrypts to the plaintext", m["plaintext"].encode(), pt)
            c.eq(f"{tag} draws published = draws used (1 at a DH ratchet step, else 0)",
                 len(d["receiver_draws"]), 1 if stepped else 0)
            c.eq(f"{tag} missing_after", d["missing_after"], party.gaps())
    c.true("conversation: every delivery was replayed", next(d_iter, None) is None)
    c.eq("conversation: nothing missing at the end (alice, bob)", ([], []), (alice_party.gaps(), bob_party.gaps()))
    return sent


def build_schedule(conv):
    """The published `schedule` (docs/protocol.md §8.2): the order in which the generator ran
    sends and deliveries, {"send": n} or {"deliver": n} per step. Followed as given; checked only
    for being a schedule at all (each message sent once, in number order, and delivered after it
    was sent, deliveries in the order of `deliveries`)."""
    schedule = []
    sent = 0
    delivered = []
    for step in conv["schedule"]:
        if set(step) == {"send"}:
            if step["send"] != sent:
                raise ValueError(f"schedule sends message {step['send']} where {sent} is next")
            sent += 1
            schedule.append(("send", step["send"]))
        elif set(step) == {"deliver"}:
            if step["deliver"] >= sent:
                raise ValueError(f"schedule delivers message {step['deliver']} before it is sent")
            delivered.append(step["deliver"])
            schedule.append(("deliver", step["deliver"]))
        else:
            raise ValueError(f"unknown schedule step {step}")
    if sent != len(conv["messages"]):
        raise ValueError(f"schedule sends {sent} of {len(conv['messages'])} messages")
    if delivered != [d["number"] for d in conv["deliveries"]]:
        raise ValueError("schedule delivers in another order than `deliveries`")
    return schedule


# ---------------------------------------------------------------------------------------------
# 4. sealed_session.json
# ---------------------------------------------------------------------------------------------


class Postcard:
    """Just enough of postcard (serde) to read the sealed session's contents."""

    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def byte(self):
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def raw(self, n):
        out = self.buf[self.pos : self.pos + n]
        if len(out) != n:
            raise DecodeError("postcard: truncated")
        self.pos += n
        return out

    def varint(self):
        shift = value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    def option(self, read):
        t = self.byte()
        if t not in (0, 1):
            raise DecodeError("postcard: bad option tag")
        return read() if t else None

    def bytes_vec(self):
        return self.raw(self.varint())

    def seq(self, read):
        return [read() for _ in range(self.varint())]

    def chain_key(self):
        return (self.raw(32), self.varint())


def parse_session_pickle(contents):
    """VersionedSessionPickle::V2(Box<SessionPickleV2>) as postcard (session.rs; protocol.md
    §7.5): variant index 1, then the boxed struct inline, fields in declaration order."""
    p = Postcard(contents)
    s = {"variant": p.varint()}
    if s["variant"] != 1:
        raise DecodeError(f"postcard: session pickle variant {s['variant']}, expected 1 (V2)")
    s["local_identity"] = p.bytes_vec()
    s["remote_identity"] = p.bytes_vec()
    s["base_key"] = p.raw(32)
    s["handshake_digest"] = p.option(lambda: p.raw(32))
    s["we_initiated"] = p.byte()
    s["root"] = p.raw(32)
    s["our_ratchet_secret"] = p.raw(32)
    s["our_ratchet_public"] = p.raw(32)
    s["sending"] = p.option(lambda: (p.chain_key(), p.raw(32)))  # ((CKs, Ns), HKs)
    s["next_sending_header"] = p.raw(32)
    s["previous_sending_length"] = p.varint()
    s["receiving"] = p.option(lambda: (p.raw(32), p.raw(32), p.chain_key()))  # (Kr, HKr, (CKr, Nr))
    s["next_receiving_header"] = p.raw(32)
    s["retired"] = p.seq(lambda: (p.raw(32), p.raw(32)))
    s["skipped"] = p.seq(lambda: (p.raw(32), p.raw(32), p.varint()))
    s["discarded"] = p.varint()
    s["pending"] = p.option(lambda: (p.varint(), p.option(p.varint), p.varint(), p.bytes_vec()))
    if p.pos != len(contents):
        raise DecodeError(f"postcard: {len(contents) - p.pos} trailing bytes")
    return s


def check_sealed(c, sj, alice_party, alice_identity, bob_identity):
    storage_key = h(sj["storage_key"])
    c.eq("sealed: storage_key is 0x5a * 32", bytes([STORAGE_KEY_BYTE]) * 32, storage_key)
    sealed = h(sj["sealed"])
    c.eq("sealed: draw sizes (one 24-byte nonce)", [24], [len(h(d)) for d in sj["draws"]])
    nonce = h(sj["draws"][0])
    c.eq("sealed: version byte", SEAL_VERSION, sealed[0])
    c.eq("sealed: kind byte (session)", KIND_SESSION, sealed[1])
    c.eq(
        "sealed: key_check = HKDF(0^32, storage_key, KDF_SEAL_KEY_CHECK, 16)",
        sealed[2:18],
        hkdf(bytes(32), storage_key, KDF_SEAL_KEY_CHECK, 16),
    )
    c.eq("sealed: nonce is the draw", sealed[18:42], nonce)
    enc_key = hkdf(bytes(32), storage_key, KDF_SEAL_KEY, 32)
    contents = xchacha20poly1305_decrypt(enc_key, nonce, sealed[:42], sealed[42:])
    if not c.true("sealed: XChaCha20-Poly1305 under HKDF(0^32, storage_key, KDF_SEAL_KEY, 32), AD = header[42], opens", contents is not None):
        return
    c.eq("sealed: re-sealing the contents gives the same bytes", sealed, sealed[:42] + xchacha20poly1305_encrypt(enc_key, nonce, sealed[:42], contents))

    # The contents are implementation-private (postcard); still, they must be the state our
    # independent model reached.
    s = parse_session_pickle(contents)
    a = alice_party
    tag = "sealed: contents (postcard, implementation-private)"
    c.eq(f"{tag} variant V2", 1, s["variant"])
    c.eq(f"{tag} identities (local alice, remote bob)", (alice_identity, bob_identity), (s["local_identity"], s["remote_identity"]))
    c.eq(f"{tag} base key / handshake digest / we_initiated", (a.base_key, None, 1), (s["base_key"], s["handshake_digest"], s["we_initiated"]))
    c.eq(f"{tag} root key", a.root, s["root"])
    c.eq(f"{tag} ratchet secret and public key", (a.our_secret, a.our_pub), (s["our_ratchet_secret"], s["our_ratchet_public"]))
    c.eq(f"{tag} sending chain ((key, index), HKs)", ((a.sending[0], a.sending[1]), a.hks), s["sending"])
    c.eq(f"{tag} NHKs", a.nhks, s["next_sending_header"])
    c.eq(f"{tag} previous sending length", a.pn, s["previous_sending_length"])
    c.eq(f"{tag} receiving chain (their key, HKr, (key, index))",
         (a.receiving[0], a.receiving[1], (a.receiving[2], a.receiving[3])), s["receiving"])
    c.eq(f"{tag} NHKr", a.nhkr, s["next_receiving_header"])
    c.eq(f"{tag} retired chains (ratchet key, header key)", a.retired, s["retired"])
    c.eq(f"{tag} skipped keys / discarded", ([(rk, mk, i) for rk, i, mk in a.skipped], a.discarded), (s["skipped"], s["discarded"]))
    c.eq(f"{tag} no pending prekey", None, s["pending"])

    # The unsealed session's next message is the same as the model's (encryption is
    # deterministic given the state).
    model = copy.deepcopy(a)
    wire, _ = model.encrypt(sj["next_plaintext"].encode())
    c.eq("sealed: next_message = alice's next message for next_plaintext", h(sj["next_message"]), wire)
    kind, rm = parse_message(h(sj["next_message"]))
    header_pt = open_header(a.hks, a.ad, rm["encrypted_header"], rm["ciphertext"]) if kind == "ratchet" else None
    c.eq("sealed: next_message is a ratchet message continuing alice's chain (header opens under HKs)",
         ("ratchet", a.our_pub, a.pn, a.sending[1]),
         (kind,) + (decode_header_plaintext(header_pt) if header_pt is not None else (None, None, None)))


# ---------------------------------------------------------------------------------------------
# 5. transcript.json (docs/transcripts.md)
# ---------------------------------------------------------------------------------------------


def parse_transcript_record(buf):
    """direction[1] || sender[32] || message_id[16] || sent_at_ms[8] || received_at_ms[8] ||
    content_type[1] || content_len[4] || content (at most 65 536 bytes)."""
    r = Reader(buf)
    d = r.u8("direction")
    if d not in (0, 1):
        raise DecodeError(f"direction {d} is not 0 or 1")
    rec = {
        "direction": "sent" if d == 0 else "received",
        "sender": r.take(32, "sender"),
        "message_id": r.take(16, "message id"),
        "sent_at_ms": r.u64("sent at"),
        "received_at_ms": r.u64("received at"),
        "content_type": r.u8("content type"),
    }
    n = r.u32("content length")
    if n > MAX_CONTENT_LEN:
        raise DecodeError(f"content length {n} > {MAX_CONTENT_LEN}")
    rec["content"] = r.take(n, "content")
    r.expect_empty("transcript record")
    return rec


def encode_transcript_record(rec):
    return (
        bytes([0 if rec["direction"] == "sent" else 1])
        + rec["sender"]
        + rec["message_id"]
        + rec["sent_at_ms"].to_bytes(8, "big")
        + rec["received_at_ms"].to_bytes(8, "big")
        + bytes([rec["content_type"]])
        + len(rec["content"]).to_bytes(4, "big")
        + rec["content"]
    )


def parse_sealed_record(buf):
    """version || 0x50 || sequence[8] || previous_hash[32] || nonce[24] || ct_len[4] || ct."""
    r = Reader(buf)
    r.header(SEALED_RECORD_TYPE, "sealed transcript record")
    s = {"sequence": r.u64("sequence"), "previous_hash": r.take(32, "previous hash"), "nonce": r.take(24, "nonce")}
    n = r.u32("ciphertext length")
    if n > MAX_RECORD_CIPHERTEXT_LEN:
        raise DecodeError(f"record ciphertext length {n} > {MAX_RECORD_CIPHERTEXT_LEN}")
    s["ciphertext"] = r.take(n, "record ciphertext")
    r.expect_empty("sealed transcript record")
    s["header_bytes"] = buf[:SEALED_HEADER_LEN]
    return s


def encode_sealed_record(sequence, previous_hash, nonce, ciphertext):
    return (
        bytes([PROTOCOL_VERSION, SEALED_RECORD_TYPE])
        + sequence.to_bytes(8, "big")
        + previous_hash
        + nonce
        + len(ciphertext).to_bytes(4, "big")
        + ciphertext
    )


def checkpoint_message(tid, count, head_hash, time_ms, closed):
    """transcript_id[16] || count[8] || head_hash[32] || time_ms[8] || closed[1] (65 bytes)."""
    return tid + count.to_bytes(8, "big") + head_hash + time_ms.to_bytes(8, "big") + bytes([1 if closed else 0])


def parse_checkpoint(buf):
    """version || 0x51 || signed message[65] || signature[64] (131 bytes)."""
    r = Reader(buf)
    r.header(CHECKPOINT_TYPE, "transcript checkpoint")
    cp = {
        "transcript": r.take(16, "transcript id"),
        "count": r.u64("count"),
        "head_hash": r.take(32, "head hash"),
        "time_ms": r.u64("time"),
        "closed": r.flag("closed"),
        "signature": r.take(SIG_LEN, "signature"),
    }
    r.expect_empty("transcript checkpoint")
    cp["signed_message"] = buf[2 : 2 + 65]
    return cp


def transcript_record_key(tid, key):
    return hkdf(tid, key, KDF_TRANSCRIPT_RECORD, 32)


def transcript_genesis(tid):
    return sha256(TRANSCRIPT_GENESIS + tid)


def record_hash(tid, sealed_bytes):
    return sha256(TRANSCRIPT_RECORD_HASH + tid + sealed_bytes)


def open_sealed_record(tid, record_key, sealed_bytes):
    """The plaintext fields, or None if the record fails authentication or does not decode."""
    s = parse_sealed_record(sealed_bytes)
    pt = xchacha20poly1305_decrypt(record_key, s["nonce"], tid + s["header_bytes"], s["ciphertext"])
    if pt is None:
        return None
    try:
        return parse_transcript_record(pt)
    except DecodeError:
        return None


def verify_transcript(tid, key, signing_public, checkpoint_encodings, record_encodings):
    """TranscriptVerifier (verify.rs), written from docs/transcripts.md §5. Returns
    {"ok": report} or {"fault": fault}."""
    record_key = transcript_record_key(tid, key)
    # Checkpoints: the first that names another transcript or fails its signature is the fault;
    # valid ones are kept by count; two valid ones for one count must agree on the head (keep a
    # closing one already held, else the later one).
    checkpoint_fault = None
    by_count = {}
    for enc in checkpoint_encodings:
        cp = parse_checkpoint(enc)
        if cp["transcript"] != tid:
            fault = {"fault": "WrongTranscript"}
        elif not ed25519_verify(signing_public, SIG_TRANSCRIPT_CHECKPOINT + cp["signed_message"], cp["signature"]):
            fault = {"fault": "BadCheckpointSignature", "count": cp["count"]}
        else:
            fault = None
        if fault is not None:
            checkpoint_fault = checkpoint_fault or fault
            continue
        existing = by_count.get(cp["count"])
        if existing is not None and existing["head_hash"] != cp["head_hash"]:
            checkpoint_fault = checkpoint_fault or {"fault": "CheckpointMismatch", "count": cp["count"]}
        elif existing is not None and existing["closed"]:
            pass
        else:
            by_count[cp["count"]] = cp

    # One pass over the stored records.
    head = transcript_genesis(tid)
    seen = []  # (sequence, authentic)
    link_breaks = set()
    checkpoint_mismatch = None
    for pos, enc in enumerate(record_encodings):
        s = parse_sealed_record(enc)
        authentic = open_sealed_record(tid, record_key, enc) is not None
        if s["previous_hash"] != head:
            link_breaks.add(pos)
        head = record_hash(tid, enc)
        c = by_count.get(pos + 1)
        if c is not None and c["head_hash"] != head and checkpoint_mismatch is None:
            checkpoint_mismatch = pos + 1
        seen.append((s["sequence"], authentic))

    def first_record_fault():
        for p, (seq, authentic) in enumerate(seen):
            if not authentic:
                nxt = seen[p + 1] if p + 1 < len(seen) else None
                if nxt is not None and nxt[1] and nxt[0] == p:
                    return {"fault": "Inserted", "position": p}
                return {"fault": "Modified", "sequence": p}
            if seq < p:
                return {"fault": "Duplicated", "sequence": seq}
            if seq > p:
                later = any(a and sq == p for sq, a in seen[p + 1 :])
                return {"fault": "Reordered" if later else "Removed", "sequence": p}
            if p in link_breaks:
                next_broken = (p + 1) in link_breaks or (p + 1 == len(seen) and checkpoint_mismatch == p + 1)
                return {"fault": "Modified", "sequence": p if (next_broken or p == 0) else p - 1}
        return None

    if checkpoint_fault is not None:
        return {"fault": checkpoint_fault}
    fault = first_record_fault()
    if fault is not None:
        return {"fault": fault}
    records = len(seen)
    if checkpoint_mismatch is not None:
        return {"fault": {"fault": "CheckpointMismatch", "count": checkpoint_mismatch}}
    last = by_count[max(by_count)] if by_count else None
    if last is not None and last["count"] > records:
        return {"fault": {"fault": "Truncated", "checkpoint_count": last["count"], "records": records}}
    closing = next((by_count[k] for k in sorted(by_count) if by_count[k]["closed"]), None)
    if closing is not None and closing["count"] < records:
        return {"fault": {"fault": "RecordsAfterClose", "closed_at": closing["count"]}}
    covered = last["count"] if last is not None else 0
    return {
        "ok": {
            "records": records,
            "checkpoints": len(by_count),
            "unsigned_tail": records - covered,
            "closed": last is not None and last["closed"] and last["count"] == records,
            "head_hash": head.hex(),
        }
    }


def chunk_nonce(index, last):
    """STREAM nonce: index[8, big-endian] || 0x00 0x00 0x00 || last[1]."""
    return index.to_bytes(8, "big") + b"\x00\x00\x00" + bytes([1 if last else 0])


def export_wrap_okm(shared, ephemeral_public, recipient_public):
    """HKDF(salt = E || R, ikm = shared, KDF_EXPORT_WRAP, 44): wrap key (0..32), nonce (32..44)."""
    return hkdf(ephemeral_public + recipient_public, shared, KDF_EXPORT_WRAP, 44)


def export_wrap_ad(recipient_public, prefix, keys):
    """R || version || type || recipient_count || every entry's R || E (docs/transcripts.md §6.2)."""
    return recipient_public + prefix + keys


def export_payload_key(header, file_key):
    return hkdf(sha256(header), file_key, KDF_EXPORT_PAYLOAD, 32)


def export_state(tid, signer_fingerprint, count, head):
    """One transcript's final state as signed (88 bytes, §6.6)."""
    return tid + signer_fingerprint + count.to_bytes(8, "big") + head


def export_signed_message(header, states):
    """SHA-256(header) || transcript count[8] || SHA-256(states) (72 bytes, §6.6)."""
    return sha256(header) + len(states).to_bytes(8, "big") + sha256(b"".join(states))


def read_export(data, auditor_secret, expected_exporter=None):
    """An independent ExportReader (export.rs), stricter where the format allows: a chunk must
    open under the nonce whose last flag says whether it ends the stream. Checks the exporter's
    signature and each transcript's signed final state. Returns the header, payload key, chunk
    list, item list and the exporter's identity."""
    r = Reader(data)
    v, t, count = r.u8("version"), r.u8("type"), r.u8("recipient count")
    if v == 1 and t == EXPORT_TYPE:
        raise DecodeError("version-1 export: unsigned, refused (§6.10)")
    if v != EXPORT_VERSION or t != EXPORT_TYPE:
        raise DecodeError(f"export header {v:#04x} {t:#04x}")
    if not 1 <= count <= MAX_RECIPIENTS:
        raise DecodeError(f"recipient count {count}")
    auditor_public = x25519_public(auditor_secret)
    keys, own = b"", None
    for _ in range(count):
        recipient = r.take(32, "recipient key")
        ephemeral = r.x25519("ephemeral key")
        wrapped = r.take(48, "wrapped file key")
        keys += recipient + ephemeral
        if recipient == auditor_public and own is None:
            own = (ephemeral, wrapped)
    if own is None:
        raise DecodeError("not a recipient")
    ephemeral, wrapped = own
    okm = export_wrap_okm(x25519(auditor_secret, ephemeral), ephemeral, auditor_public)
    ad = export_wrap_ad(auditor_public, bytes([v, t, count]), keys)
    file_key = aead_decrypt(okm[:32], okm[32:], ad, wrapped)
    if file_key is None or len(file_key) != 32:
        raise DecodeError("the file key does not unwrap")
    header = data[: r.pos]
    payload_key = export_payload_key(header, file_key)
    chunks, stream, index = [], b"", 0
    while r.pos < len(data):
        offset = r.pos
        n = r.u32("chunk length")
        if not TAG_LEN <= n <= CHUNK_LEN + TAG_LEN:
            raise DecodeError(f"chunk length {n}")
        sealed = r.take(n, "chunk")
        last = r.pos == len(data)
        plain = aead_decrypt(payload_key, chunk_nonce(index, last), b"", sealed)
        if plain is None:
            raise DecodeError(f"chunk {index} does not open with last = {last}")
        if aead_decrypt(payload_key, chunk_nonce(index, not last), b"", sealed) is not None:
            raise DecodeError(f"chunk {index} also opens with last = {not last}")
        if not last and len(plain) != CHUNK_LEN:
            raise DecodeError(f"chunk {index} is not last but holds {len(plain)} bytes")
        chunks.append({"index": index, "last": last, "offset": offset, "sealed_len": n,
                       "plaintext_len": len(plain), "nonce": chunk_nonce(index, last).hex()})
        stream += plain
        index += 1
    if not chunks or not chunks[-1]["last"]:
        raise DecodeError("no last chunk")
    # Items: tag[1] || length[4] || body. Grammar: (start checkpoint* record* end)* export-end.
    items, sr, state = [], Reader(stream), "between"
    states, mismatch, current, exporter = [], None, None, None
    while sr.pos < len(stream):
        if state == "done":
            raise DecodeError("data after the export end item")
        offset = sr.pos
        tag, n = sr.u8("item tag"), sr.u32("item length")
        if n > MAX_ITEM_LEN:
            raise DecodeError(f"item length {n} > {MAX_ITEM_LEN}")
        body = sr.take(n, "item body")
        item = {"offset": offset, "tag": tag, "length": n, "body": body}
        if tag == ITEM_TRANSCRIPT_START and state == "between":
            b = Reader(body)
            item["manifest"] = m = {"id": b.take(16, "transcript id"), "signer": read_identity(b),
                                    "key": b.take(32, "transcript key"), "record_count": b.u64("record count")}
            b.expect_empty("transcript start")
            fp = sha256(FINGERPRINT + m["signer"]["signing"] + m["signer"]["dh"])
            current = {"id": m["id"], "fingerprint": fp, "announced": m["record_count"], "seen": 0,
                       "head": transcript_genesis(m["id"])}
            state = "checkpoints"
        elif tag == ITEM_CHECKPOINT and state == "checkpoints":
            item["checkpoint"] = parse_checkpoint(body)
        elif tag == ITEM_RECORD and state in ("checkpoints", "records") and current["seen"] < current["announced"]:
            item["record"] = parse_sealed_record(body)
            current["head"] = record_hash(current["id"], body)
            current["seen"] += 1
            state = "records"
        elif tag == ITEM_TRANSCRIPT_END and state in ("checkpoints", "records"):
            b = Reader(body)
            signed_count, signed_head = b.u64("final record count"), b.take(32, "final head hash")
            b.expect_empty("transcript end")
            if current["seen"] != current["announced"]:
                raise DecodeError(f"a transcript announced {current['announced']} records but holds {current['seen']}")
            item["final_state"] = {"record_count": signed_count, "head_hash": signed_head}
            states.append(export_state(current["id"], current["fingerprint"], signed_count, signed_head))
            if mismatch is None:
                if current["seen"] > signed_count:
                    mismatch = f"records appended after the signed state ({current['seen']} present, {signed_count} signed)"
                elif current["seen"] < signed_count:
                    mismatch = f"records removed ({current['seen']} present, {signed_count} signed)"
                elif current["head"] != signed_head:
                    mismatch = "records altered (the head differs from the signed one)"
            state = "between"
        elif tag == ITEM_EXPORT_END and state == "between":
            b = Reader(body)
            exporter = read_identity(b)
            signature = b.take(SIG_LEN, "export signature")
            b.expect_empty("export end")
            message = export_signed_message(header, states)
            if not ed25519_verify(exporter["signing"], SIG_TRANSCRIPT_EXPORT + message, signature):
                raise DecodeError("the exporter's signature does not verify")
            exporter["fingerprint"] = sha256(FINGERPRINT + exporter["signing"] + exporter["dh"])
            if expected_exporter is not None and exporter["fingerprint"] != expected_exporter:
                raise DecodeError("signed by another identity than the expected exporter")
            if mismatch is not None:
                raise DecodeError(mismatch)
            item["exporter"], item["signature"], item["signed_message"] = exporter, signature, message
            state = "done"
        else:
            raise DecodeError(f"item tag {tag:#04x} unexpected here")
        items.append(item)
    if state != "done":
        raise DecodeError("the export ends without its end item")
    return {"header": header, "file_key": file_key, "payload_key": payload_key, "chunks": chunks,
            "items": items, "stream": stream, "exporter": exporter, "wrap_okm": okm, "wrap_ad": ad}


def write_export(header, payload_key, stream):
    """Seal the item stream in CHUNK_LEN pieces; the final piece (1..CHUNK_LEN bytes) is last."""
    out, index, pos = header, 0, 0
    while len(stream) - pos > CHUNK_LEN:
        sealed = aead_encrypt(payload_key, chunk_nonce(index, False), b"", stream[pos : pos + CHUNK_LEN])
        out += len(sealed).to_bytes(4, "big") + sealed
        pos += CHUNK_LEN
        index += 1
    sealed = aead_encrypt(payload_key, chunk_nonce(index, True), b"", stream[pos:])
    return out + len(sealed).to_bytes(4, "big") + sealed


def item_bytes(tag, body):
    return bytes([tag]) + len(body).to_bytes(4, "big") + body


def check_transcript(c, tj, keys):
    # The signer is Alice (keys.json), recomputed here from her draws so this section stands alone.
    alice = derive_account(keys["alice"]["draws"], ALICE_DEVICE_ID)
    bob = derive_account(keys["bob"]["account"]["draws"], BOB_DEVICE_ID)
    signer = tj["signer"]
    c.eq("transcript: signer identity = alice's (keys.json)", h(signer["identity_key"]), alice["identity"])
    c.eq("transcript: signer signing key = Ed25519 public of alice.draws[0]", h(signer["signing_key"]), alice["signing"])
    c.eq("transcript: signer fingerprint", signer["fingerprint"], alice["fingerprint"].hex())
    c.eq("transcript: checkpoint interval", TRANSCRIPT_CHECKPOINT_INTERVAL, tj["checkpoint_interval"])

    c.eq("transcript: TranscriptWriter::new draw sizes (id, key)", [16, 32], [len(h(d)) for d in tj["draws"]])
    tid, key = (h(d) for d in tj["draws"])
    c.eq("transcript: transcript_id is the first draw", h(tj["transcript_id"]), tid)
    c.eq("transcript: transcript_key is the second draw", h(tj["transcript_key"]), key)
    record_key = transcript_record_key(tid, key)
    c.eq("transcript: record_key = HKDF(salt = id, ikm = key, KDF_TRANSCRIPT_RECORD, 32)", h(tj["record_key"]), record_key)
    genesis = transcript_genesis(tid)
    c.eq("transcript: genesis_hash = SHA-256(TRANSCRIPT_GENESIS || id)", h(tj["genesis_hash"]), genesis)

    fingerprints = {"sent": alice["fingerprint"], "received": bob["fingerprint"]}
    records = tj["records"]
    c.eq("transcript: 5 records numbered 0..4", list(range(5)), [r["sequence"] for r in records])
    previous = genesis
    sealed_bytes, hashes = [], []
    for i, rj in enumerate(records):
        tag = f"transcript: record {i}"
        c.eq(f"{tag} draw sizes (one 24-byte nonce)", [24], [len(h(d)) for d in rj["draws"]])
        nonce = h(rj["draws"][0])
        plaintext = h(rj["plaintext"])
        rec = parse_transcript_record(plaintext)
        c.eq(
            f"{tag} plaintext fields (direction, sender, message id, times, content type, length)",
            (rj["direction"], h(rj["sender"]), h(rj["message_id"]), rj["sent_at_ms"], rj["received_at_ms"],
             rj["content_type"], rj["content_len"]),
            (rec["direction"], rec["sender"], rec["message_id"], rec["sent_at_ms"], rec["received_at_ms"],
             rec["content_type"], len(rec["content"])),
        )
        c.eq(f"{tag} sender is the {rj['direction']} side's fingerprint (keys.json)", fingerprints[rj["direction"]], rec["sender"])
        c.eq(f"{tag} content SHA-256", h(rj["content_sha256"]), sha256(rec["content"]))
        if "content_text" in rj:
            c.eq(f"{tag} content text (type 1)", (1, rj["content_text"]), (rec["content_type"], rec["content"].decode("utf-8")))
        c.eq(f"{tag} plaintext re-encodes byte for byte", plaintext, encode_transcript_record(rec))

        sealed = h(rj["sealed"])
        s = parse_sealed_record(sealed)
        c.eq(f"{tag} sealed header (sequence, previous hash = hash of the record before, nonce = draw)",
             (i, previous, nonce), (s["sequence"], s["previous_hash"], s["nonce"]))
        c.eq(f"{tag} published previous_hash and nonce", (h(rj["previous_hash"]), h(rj["nonce"])), (previous, nonce))
        ad = tid + sealed[:SEALED_HEADER_LEN]
        c.eq(f"{tag} associated_data = transcript_id || the 66 sealed header bytes", h(rj["associated_data"]), ad)
        opened = xchacha20poly1305_decrypt(record_key, nonce, ad, s["ciphertext"])
        c.eq(f"{tag} XChaCha20-Poly1305(record_key, nonce, AD) opens to the plaintext", plaintext, opened)
        resealed = encode_sealed_record(i, previous, nonce, xchacha20poly1305_encrypt(record_key, nonce, ad, plaintext))
        c.eq(f"{tag} re-sealing gives the published bytes", sealed, resealed)
        c.true(f"{tag} does not open under another transcript id",
               xchacha20poly1305_decrypt(record_key, nonce, bytes(16) + sealed[:SEALED_HEADER_LEN], s["ciphertext"]) is None)
        digest = record_hash(tid, sealed)
        c.eq(f"{tag} hash = SHA-256(TRANSCRIPT_RECORD_HASH || id || sealed)", h(rj["hash"]), digest)
        previous = digest
        sealed_bytes.append(sealed)
        hashes.append(digest)

    # Checkpoints: every interval, and on close.
    cps = tj["checkpoints"]
    n = len(records)
    expected = [(k, False) for k in range(TRANSCRIPT_CHECKPOINT_INTERVAL, n + 1, TRANSCRIPT_CHECKPOINT_INTERVAL)] + [(n, True)]
    c.eq("transcript: checkpoints (count, closed): every 2 records, then the closing one",
         expected, [(cp["count"], cp["closed"]) for cp in cps])
    checkpoint_bytes = []
    for k, cj in enumerate(cps):
        tag = f"transcript: checkpoint {k} (count {cj['count']})"
        head = hashes[cj["count"] - 1] if cj["count"] else genesis
        c.eq(f"{tag} head_hash = hash of record count-1", h(cj["head_hash"]), head)
        message = checkpoint_message(tid, cj["count"], head, cj["time_ms"], cj["closed"])
        c.eq(f"{tag} signed_message = id || count || head || time || closed", h(cj["signed_message"]), message)
        c.true(f"{tag} Ed25519 signature verifies over SIG_TRANSCRIPT_CHECKPOINT || message",
               ed25519_verify(alice["signing"], SIG_TRANSCRIPT_CHECKPOINT + message, h(cj["signature"])))
        c.eq(f"{tag} re-signing (deterministic Ed25519) gives the signature", h(cj["signature"]),
             ed25519_sign(alice["ed_seed"], SIG_TRANSCRIPT_CHECKPOINT + message))
        encoded = bytes([PROTOCOL_VERSION, CHECKPOINT_TYPE]) + message + h(cj["signature"])
        c.eq(f"{tag} encoding (131 bytes)", h(cj["encoded"]), encoded)
        p = parse_checkpoint(h(cj["encoded"]))
        c.eq(f"{tag} parses back", (tid, cj["count"], cj["time_ms"], cj["closed"]), (p["transcript"], p["count"], p["time_ms"], p["closed"]))
        checkpoint_bytes.append(encoded)

    # Verification, as stored and tampered.
    for case in tj["verification"]["cases"]:
        stored = [sealed_bytes[x] if isinstance(x, int) else h(x["sealed"]) for x in case["records"]]
        given = [checkpoint_bytes[x] if isinstance(x, int) else h(x["encoded"]) for x in case["checkpoints"]]
        verdict = verify_transcript(tid, key, alice["signing"], given, stored)
        c.eq(f"transcript: verify {case['name']}", case["verdict"], verdict)

    check_export(c, tj["export"], tid, key, alice, sealed_bytes, checkpoint_bytes)


def check_export(c, ej, tid, key, alice, sealed_bytes, checkpoint_bytes):
    aj = ej["auditor"]
    c.eq("export: auditor draw sizes", [32], [len(h(d)) for d in aj["draws"]])
    auditor_secret = h(aj["draws"][0])
    c.eq("export: auditor secret is its draw", h(aj["secret"]), auditor_secret)
    auditor_public = x25519_public(auditor_secret)
    c.eq("export: auditor public = X25519(secret, 9)", h(aj["public"]), auditor_public)
    c.eq("export: ExportWriter::new draw sizes (file key, ephemeral secret)", [32, 32], [len(h(d)) for d in ej["draws"]])
    file_key, eph_secret = (h(d) for d in ej["draws"])
    c.eq("export: file_key / ephemeral_secret are the draws", (h(ej["file_key"]), h(ej["ephemeral_secret"])), (file_key, eph_secret))
    eph_public = x25519_public(eph_secret)
    c.eq("export: ephemeral public", h(ej["ephemeral_public"]), eph_public)
    shared = x25519(eph_secret, auditor_public)
    c.eq("export: shared secret = X25519(ephemeral, auditor)", h(ej["shared_secret"]), shared)
    c.eq("export: the auditor computes the same shared secret", shared, x25519(auditor_secret, eph_public))
    okm = export_wrap_okm(shared, eph_public, auditor_public)
    c.eq("export: wrap_okm = HKDF(salt = ephemeral || recipient, ikm = shared, KDF_EXPORT_WRAP, 44)", h(ej["wrap_okm"]), okm)
    c.eq("export: wrap_key = wrap_okm[0..32], wrap_nonce = wrap_okm[32..44]", (h(ej["wrap_key"]), h(ej["wrap_nonce"])), (okm[:32], okm[32:]))
    prefix = bytes([EXPORT_VERSION, EXPORT_TYPE, 1])
    wrap_ad = export_wrap_ad(auditor_public, prefix, auditor_public + eph_public)
    c.eq("export: wrap_ad = recipient || 02 60 01 || recipient || ephemeral (99 bytes)", h(ej["wrap_ad"]), wrap_ad)
    wrapped = aead_encrypt(okm[:32], okm[32:], wrap_ad, file_key)
    c.eq("export: wrapped_file_key = ChaCha20-Poly1305(wrap_key, wrap_nonce, wrap_ad, file_key)", h(ej["wrapped_file_key"]), wrapped)
    header = prefix + auditor_public + eph_public + wrapped
    c.eq("export: header = 02 60 01 || recipient || ephemeral || wrapped (115 bytes)", h(ej["header"]), header)
    c.eq("export: header_sha256", h(ej["header_sha256"]), sha256(header))
    payload_key = export_payload_key(header, file_key)
    c.eq("export: payload_key = HKDF(salt = SHA-256(header), ikm = file_key, KDF_EXPORT_PAYLOAD, 32)", h(ej["payload_key"]), payload_key)
    c.eq("export: chunk_len", CHUNK_LEN, ej["chunk_len"])

    data = h(ej["bytes"])
    c.eq("export: bytes start with the header", header, data[: len(header)])
    x = read_export(data, auditor_secret, expected_exporter=alice["fingerprint"])
    c.ok("export: reads with the auditor's secret alone (unwrap, payload key, every chunk, every item, the exporter's signature)")
    c.eq("export: the exporter is alice", alice["identity"], x["exporter"]["bytes"])
    c.eq("export: reader's payload key", payload_key, x["payload_key"])
    c.eq("export: chunks (offset, lengths, nonce with index and last flag)", ej["chunks"], x["chunks"])
    c.true("export: more than one chunk, so both last flags are exercised", len(x["chunks"]) > 1)
    published_items = [{k: v for k, v in it.items() if k in ("offset", "tag", "length")} for it in ej["items"]]
    c.eq("export: item offsets, tags and lengths", published_items,
         [{"offset": it["offset"], "tag": it["tag"], "length": it["length"]} for it in x["items"]])

    items = x["items"]
    m = items[0]["manifest"]
    c.eq("export: transcript start = id || alice identity || transcript key || record count",
         (tid, alice["identity"], key, len(sealed_bytes)), (m["id"], m["signer"]["bytes"], m["key"], m["record_count"]))
    c.eq("export: transcript start body as published", h(ej["items"][0]["body"]), items[0]["body"])
    c.eq("export: checkpoint items are the published checkpoints, in order, before the records",
         checkpoint_bytes, [it["body"] for it in items if it["tag"] == ITEM_CHECKPOINT])
    c.eq("export: record items are the published sealed records, in order",
         sealed_bytes, [it["body"] for it in items if it["tag"] == ITEM_RECORD])
    c.eq("export: published item names (checkpoint / record indices)",
         [it.get("checkpoint", it.get("record")) for it in ej["items"]],
         [None] + list(range(len(checkpoint_bytes))) + list(range(len(sealed_bytes))) + [None, None])
    for i in (0, -2, -1):
        c.eq(f"export: item {i} body as published", h(ej["items"][i]["body"]), items[i]["body"])
    c.eq("export: items end with transcript end (0x04) and export end (0xff)", [ITEM_TRANSCRIPT_END, ITEM_EXPORT_END],
         [it["tag"] for it in items[-2:]])

    # The exporter's signature (§6.6), re-derived from the records.
    sj = ej["signature"]
    head = record_hash(tid, sealed_bytes[-1])
    c.eq("export: final state = 5 records, head = hash of the last record", (len(sealed_bytes), head), (sj["record_count"], h(sj["head_hash"])))
    final = len(sealed_bytes).to_bytes(8, "big") + head
    c.eq("export: transcript end body = record_count[8] || head_hash[32]", final, items[-2]["body"])
    c.eq("export: transcript_end_body as published", h(sj["transcript_end_body"]), final)
    state = export_state(tid, alice["fingerprint"], len(sealed_bytes), head)
    c.eq("export: state entry = id || signer fingerprint || count || head (88 bytes)", [h(e) for e in sj["state_entries"]], [state])
    c.eq("export: states_hash = SHA-256(state entries)", h(sj["states_hash"]), sha256(state))
    message = export_signed_message(header, [state])
    c.eq("export: signed message = SHA-256(header) || 1[8] || states_hash (72 bytes)", h(sj["signed_message"]), message)
    c.true("export: Ed25519 signature verifies under alice's identity with SIG_TRANSCRIPT_EXPORT",
           ed25519_verify(alice["signing"], SIG_TRANSCRIPT_EXPORT + message, h(sj["signature"])))
    signature = ed25519_sign(alice["ed_seed"], SIG_TRANSCRIPT_EXPORT + message)
    c.eq("export: deterministic re-signing gives the published signature", h(sj["signature"]), signature)
    export_end = alice["identity"] + signature
    c.eq("export: export end body = alice identity || signature (192 bytes)", (h(sj["export_end_body"]), export_end), (export_end, items[-1]["body"]))
    c.eq("export: exporter fingerprint", sj["exporter_fingerprint"], alice["fingerprint"].hex())

    # Rebuild the whole export from the published parts and the draws.
    stream = item_bytes(ITEM_TRANSCRIPT_START, tid + alice["identity"] + key + len(sealed_bytes).to_bytes(8, "big"))
    stream += b"".join(item_bytes(ITEM_CHECKPOINT, cp) for cp in checkpoint_bytes)
    stream += b"".join(item_bytes(ITEM_RECORD, r) for r in sealed_bytes)
    stream += item_bytes(ITEM_TRANSCRIPT_END, final) + item_bytes(ITEM_EXPORT_END, export_end)
    c.eq("export: the decrypted item stream is exactly the framed items", stream, x["stream"])
    c.eq("export: re-sealing the item stream in 64 KiB chunks gives the published bytes", data, write_export(header, payload_key, stream))

    # What the auditor concludes: the exported transcript verifies, closed, with no unsigned tail.
    verdict = verify_transcript(m["id"], m["key"], m["signer"]["signing"],
                                [it["body"] for it in items if it["tag"] == ITEM_CHECKPOINT],
                                [it["body"] for it in items if it["tag"] == ITEM_RECORD])
    c.eq("export: the exported transcript verifies (5 records, 3 checkpoints, closed)",
         (5, 3, 0, True), tuple(verdict.get("ok", {}).get(k) for k in ("records", "checkpoints", "unsigned_tail", "closed")))

    # Tampering with the export is refused.
    refused = []
    for name, bad in (
        ("a header byte", data[:40] + bytes([data[40] ^ 1]) + data[41:]),
        ("a body byte", data[:200] + bytes([data[200] ^ 1]) + data[201:]),
        ("the last chunk dropped", data[: x["chunks"][-1]["offset"]]),
        ("the chunks swapped", header + data[x["chunks"][1]["offset"]:] + data[len(header) : x["chunks"][1]["offset"]]),
        ("a byte appended", data + b"\x00"),
    ):
        try:
            read_export(bad, auditor_secret)
        except DecodeError:
            continue
        refused.append(name)
    c.eq("export: altered header, altered body, dropped last chunk, swapped chunks, trailing byte are refused", [], refused)

    # What a recipient can do with the file key and the transcript key, and what is refused.
    def start(count):
        return item_bytes(ITEM_TRANSCRIPT_START, tid + alice["identity"] + key + count.to_bytes(8, "big"))

    cps = b"".join(item_bytes(ITEM_CHECKPOINT, cp) for cp in checkpoint_bytes)
    recs = [item_bytes(ITEM_RECORD, r) for r in sealed_bytes]
    record_key = transcript_record_key(tid, key)
    last = parse_sealed_record(sealed_bytes[-1])
    plain = xchacha20poly1305_decrypt(record_key, last["nonce"], tid + last["header_bytes"], last["ciphertext"])
    forged_header = bytes([PROTOCOL_VERSION, SEALED_RECORD_TYPE]) + (5).to_bytes(8, "big") + head + bytes(24)
    forged = encode_sealed_record(5, head, bytes(24), xchacha20poly1305_encrypt(record_key, bytes(24), tid + forged_header, plain))
    c.true("export: a recipient can forge record 5 that authenticates and chains", open_sealed_record(tid, record_key, forged) is not None)
    tail = item_bytes(ITEM_TRANSCRIPT_END, final) + item_bytes(ITEM_EXPORT_END, export_end)
    refused = []
    for name, body, why in (
        ("a forged record appended", start(6) + cps + b"".join(recs) + item_bytes(ITEM_RECORD, forged) + tail, "appended"),
        ("the last record removed", start(4) + cps + b"".join(recs[:-1]) + tail, "removed"),
        ("the stated final state rewritten to the forgery",
         start(6) + cps + b"".join(recs) + item_bytes(ITEM_RECORD, forged)
         + item_bytes(ITEM_TRANSCRIPT_END, (6).to_bytes(8, "big") + record_hash(tid, forged)) + item_bytes(ITEM_EXPORT_END, export_end),
         "signature"),
    ):
        try:
            read_export(write_export(header, payload_key, body), auditor_secret)
            refused.append(f"{name}: accepted")
        except DecodeError as e:
            if why not in str(e):
                refused.append(f"{name}: refused for another reason ({e})")
    c.eq("export: a recipient's forged, removed or re-stated records after the last checkpoint are refused", [], refused)
    try:
        read_export(data, auditor_secret, expected_exporter=bytes(32))
        c.fail("export: another expected exporter is refused", ["read succeeded"])
    except DecodeError as e:
        c.true("export: another expected exporter is refused", "expected exporter" in str(e))
    try:
        read_export(bytes([1]) + data[1:], auditor_secret)
        c.fail("export: a version-1 header is refused", ["read succeeded"])
    except DecodeError as e:
        c.true("export: a version-1 header is refused as unsigned", "version-1" in str(e))
    try:
        read_export(data, bytes(31) + b"\x01")
        c.fail("export: another key is not a recipient", ["read succeeded"])
    except DecodeError:
        c.ok("export: another key is not a recipient")


# ---------------------------------------------------------------------------------------------
# Self-tests of the hand-written parts (draft-irtf-cfrg-xchacha-03)
# ---------------------------------------------------------------------------------------------


def self_tests(c):
    key = bytes(range(32))
    nonce = h("000000090000004a0000000031415927")
    c.eq(
        "self-test: HChaCha20 (draft-irtf-cfrg-xchacha-03 §2.2.1)",
        h("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"),
        hchacha20(key, nonce),
    )
    pt = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
        b"future, sunscreen would be it."
    )
    out = xchacha20poly1305_encrypt(
        bytes(range(0x80, 0xA0)), bytes(range(0x40, 0x58)), h("50515253c0c1c2c3c4c5c6c7"), pt
    )
    c.eq("self-test: XChaCha20-Poly1305 tag (draft-irtf-cfrg-xchacha-03 §A.3.1)", h("c0875924c1c7987947deafd8780acf49"), out[-16:])
    # The GCM specification's test cases 13 and 14 (AES-256, zero key and IV): the body AEAD.
    c.eq("self-test: AES-256-GCM, empty plaintext (GCM spec test case 13)",
         h("530f8afbc74536b9a963b4f1c4cb738b"), gcm_encrypt(bytes(32), bytes(12), b"", b""))
    c.eq("self-test: AES-256-GCM, 16 zero bytes (GCM spec test case 14)",
         h("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"),
         gcm_encrypt(bytes(32), bytes(12), b"", bytes(16)))


# ---------------------------------------------------------------------------------------------


def check_xchacha_steps(c, what, key, nonce, steps, ad=None, ciphertext=None):
    """One XChaCha20-Poly1305 use, step by step (docs/protocol.md §8.1): the published HChaCha20
    input, subkey and ChaCha20-Poly1305 nonce, recomputed from the key and the 24-byte nonce;
    with `ciphertext`, RFC 8439 ChaCha20-Poly1305 under the subkey opens it."""
    c.eq(f"{what}: hchacha20_input = nonce[0..16]", nonce[:16], h(steps["hchacha20_input"]))
    subkey = hchacha20(key, nonce[:16])
    c.eq(f"{what}: subkey = HChaCha20(key, nonce[0..16])", subkey, h(steps["subkey"]))
    c.eq(f"{what}: chacha20poly1305_nonce = 0^4 || nonce[16..24]", bytes(4) + nonce[16:], h(steps["chacha20poly1305_nonce"]))
    if ciphertext is not None:
        c.true(f"{what}: ChaCha20-Poly1305 under the published subkey opens it",
               aead_decrypt(h(steps["subkey"]), h(steps["chacha20poly1305_nonce"]), ad, ciphertext) is not None)


def check_xchacha_intermediates(c, sj, tj):
    """sealed_session.json and transcript.json: the HChaCha20 steps of each XChaCha20-Poly1305 use."""
    storage_key, sealed = h(sj["storage_key"]), h(sj["sealed"])
    enc_key = hkdf(bytes(32), storage_key, KDF_SEAL_KEY, 32)
    c.eq("xchacha: sealed session enc_key = HKDF(0^32, storage_key, KDF_SEAL_KEY, 32)", enc_key, h(sj["enc_key"]))
    check_xchacha_steps(c, "xchacha: sealed session", enc_key, sealed[18:42], sj["xchacha20"], sealed[:42], sealed[42:])
    key = h(tj["record_key"])
    for rec in tj["records"]:
        check_xchacha_steps(c, f"xchacha: transcript record {rec['sequence']}", key, h(rec["nonce"]), rec["xchacha20"])
    # Test vector of draft-irtf-cfrg-xchacha-03 §2.2.1, so the checker's HChaCha20 is itself checked.
    c.eq("xchacha: HChaCha20 test vector (draft-irtf-cfrg-xchacha-03 §2.2.1)",
         h("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"),
         hchacha20(bytes(range(32)), h("000000090000004a0000000031415927")))
    return True


# Every field of these files, as docs/protocol.md §8.2 and docs/audit.md §11 list them (paths
# with [] for "each element"). A field the spec does not list, or one it lists that is missing,
# fails: the files publish nothing the spec does not explain.
_ACCOUNT_FIELDS = ["device_id", "draws", "identity_signing_key", "identity_dh_key", "identity_binding_signature",
                   "identity_key", "fingerprint", "signed_prekey", "signed_prekey.id", "signed_prekey.public",
                   "signed_prekey.signature", "signed_prekey.encoded", "last_resort_kem_prekey",
                   "last_resort_kem_prekey.id", "last_resort_kem_prekey.kind", "last_resort_kem_prekey.public",
                   "last_resort_kem_prekey.signature", "last_resort_kem_prekey.encoded"]
_XCHACHA_FIELDS = ["hchacha20_input", "subkey", "chacha20poly1305_nonce"]
# The checks clinic.json publishes (docs/clinic.md §3–§6), in order.
CLINIC_CHECKS = ("now", "agent_certificate", "agent_certificate_with_revocation_list", "agent_certificate_expired",
                 "agent_certificate_not_yet_valid", "agent_certificate_as_admin", "admin_certificate_as_admin",
                 "foreign_certificate", "device_list_for_alice", "device_list_for_bob", "wipe_for_target",
                 "wipe_for_another_device", "wipe_signed_by_an_agent")


DOCUMENTED_FIELDS = {
    "keys.json": ["description", "alice", "bob", "bob.account", "bob.one_time_prekey", "bob.one_time_kem_prekey",
                  "bob_bundle", "safety_number"]
    + [f"alice.{f}" for f in _ACCOUNT_FIELDS] + [f"bob.account.{f}" for f in _ACCOUNT_FIELDS]
    + [f"bob.one_time_prekey.{f}" for f in ("draws", "id", "public", "encoded")]
    + [f"bob.one_time_kem_prekey.{f}" for f in ("draws", "id", "kind", "public", "signature", "encoded")],
    "handshake.json": ["description", "bundle", "initiator_draws", "base_key", "dh1", "dh2", "dh3", "dh4",
                       "kem_ciphertext", "kem_shared_secret", "transcript", "transcript_hash", "shared_secret",
                       "initiator_header_key", "responder_header_key", "associated_data", "first_message",
                       "responder_draws"]
    + [f"first_message.{f}" for f in ("plaintext", "sending_chain_key", "root_key", "message_key", "header_key",
                                      "aead_key", "nonce", "encrypted_header", "handshake_digest", "wire")],
    "conversation.json": ["description", "messages", "deliveries", "schedule", "schedule[].send", "schedule[].deliver"]
    + [f"messages[].{f}" for f in ("number", "sender", "plaintext", "ratchet_key", "previous_chain_length", "index",
                                   "chain_key", "message_key", "header_key", "aead_key", "nonce", "encrypted_header",
                                   "root_key_after", "wire")]
    + [f"deliveries[].{f}" for f in ("number", "receiver", "receiver_draws", "missing_after",
                                     "missing_after[].chain", "missing_after[].missing")],
    "sealed_session.json": ["description", "storage_key", "draws", "sealed", "enc_key", "xchacha20",
                            "next_plaintext", "next_message"] + [f"xchacha20.{f}" for f in _XCHACHA_FIELDS],
    "audit.json": ["description", "chain_id", "signer_secret", "signer_public", "genesis_hash", "records", "checkpoints",
                   "verdict", "verdict.records", "verdict.checkpoints", "verdict.unsigned_tail", "verification",
                   "verification.description", "verification.cases", "verification.cases[].name",
                   "verification.cases[].records", "verification.cases[].records[].encoded",
                   "verification.cases[].checkpoints", "verification.cases[].checkpoints[].encoded",
                   "verification.cases[].verdict", "verification.cases[].verdict.ok", "verification.cases[].verdict.fault"]
    + [f"records[].{f}" for f in ("sequence", "time_ms", "encoded", "hash")]
    + [f"checkpoints[].{f}" for f in ("count", "time_ms", "head_hash", "encoded")],
    "relay_login.json": ["description", "relay_secret_key", "relay_key", "relay_key_fingerprint", "nonce",
                         "expires_at_ms", "challenge_signed_message", "relay_signature", "challenge", "identity_key",
                         "device_id", "login_signed_message", "login_signature", "credentials", "other_relay"]
    + [f"other_relay.{f}" for f in ("relay_secret_key", "relay_key", "challenge", "answer_verifies")],
    "clinic.json": ["description", "org_secret_key", "org_key", "org_key_fingerprint", "other_org_secret_key",
                    "clinic_name", "relay_url", "link", "link_text", "not_before", "not_after", "agent_certificate",
                    "admin_certificate", "foreign_certificate", "revocation_list", "device_list", "wipe_command",
                    "agent_wipe_command", "checks", "invalid", "invalid[].name", "invalid[].structure",
                    "invalid[].bytes", "invalid[].field"]
    + [f"revocation_list.{f}" for f in ("sequence", "issued_at", "serials", "bytes")]
    + [f"device_list.{f}" for f in ("sequence", "devices", "bytes")]
    + [f"wipe_command.{f}" for f in ("target_device_id", "issued_at", "nonce", "bytes")]
    + [f"checks.{f}" for f in CLINIC_CHECKS],
    "linking.json": ["description", "seed", "code_draws", "relay_url", "code_text", "slot", "device_id", "relay_key",
                     "extra", "seal_draws", "sealed"],
    # docs/conversations.md §11.
    "conversation_membership.json": ["description", "org_secret_key", "org_key", "not_before", "not_after", "t0",
                                     "now", "conversation_id", "people", "patient_device_list", "genesis_hash",
                                     "history", "members", "invalid", "members[].member", "members[].role",
                                     "members[].devices", "takeovers", "takeovers[].name", "takeovers[].after",
                                     "takeovers[].now", "takeovers[].change", "takeovers[].revocation_list",
                                     "takeovers[].members", "takeovers[].members[].member",
                                     "takeovers[].members[].role", "takeovers[].members[].devices"]
    + [f"people.{p}" for p in ("patient", "ada", "ben", "sue", "stranger")]
    + [f"people.{p}.{f}" for p in ("patient", "ada", "ben", "sue", "stranger")
       for f in ("signing_seed", "dh_secret", "identity_key", "fingerprint", "certificate")]
    + [f"history[].{f}" for f in ("epoch", "what", "signer", "signer_device", "action", "role", "member", "devices",
                                  "issued_at", "bytes", "hash")]
    + [f"invalid[].{f}" for f in ("name", "after", "now", "change", "rule", "error", "revocation_list")]
    + ["archive_policy", "queue_frames"]
    + [f"archive_policy.{f}" for f in ("archive_secret", "archive_key", "retention_days", "bytes")]
    + [f"queue_frames[].{f}" for f in ("name", "type", "bytes")]
    + ["archive_seal"]
    + [f"archive_seal.{f}" for f in ("seed", "draws", "sender", "sender_device", "epoch", "payload", "envelope")],
}


def field_paths(value, prefix="", stop=("verdict.ok", "verdict.fault")):
    """Every key path of a JSON value; the inside of a verdict is the report's or fault's own."""
    paths = set()
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            paths.add(path)
            if not path.endswith(stop):
                paths |= field_paths(v, path, stop)
    elif isinstance(value, list):
        for v in value:
            paths |= field_paths(v, prefix + "[]", stop)
    return paths


def check_documented_fields(c, load):
    for name, documented in DOCUMENTED_FIELDS.items():
        present = field_paths(load(name))
        c.eq(f"fields: {name} has exactly the fields the spec lists (unlisted, missing)",
             ([], []), (sorted(present - set(documented)), sorted(set(documented) - present)))
    return True


# docs/audit.md §3: event tag -> encoded length (tag included).
AUDIT_EVENT_LEN = {0x01: 37, 0x02: 37, 0x03: 2, 0x04: 37, 0x08: 45, 0x09: 77, 0x10: 93, 0x11: 53, 0x12: 53,
                   0x13: 41, 0x20: 89, 0x21: 73, 0x22: 73, 0x23: 37, 0x24: 74, 0x25: 89, 0x30: 25, 0x31: 26,
                   0x32: 53, 0x33: 17, 0x50: 46, 0x51: 73, 0x52: 73, 0x53: 45, 0x54: 41, 0x55: 53,
                   0x56: 95, 0x57: 53, 0x58: 93, 0x59: 69, 0x5a: 53}


def audit_record_decodes(enc):
    """docs/audit.md §2–§4: version 0x01, type 0x40, a known event tag, exactly its length, and the
    constrained fields (AuthFailure 0x01..0x05, requested_by_peer 0x00/0x01, and MembershipChanged's
    action 0x01/0x02 and role 0x01..0x03)."""
    if len(enc) < 51 or enc[0] != PROTOCOL_VERSION or enc[1] != 0x40:
        return False
    tag = enc[50]
    if tag not in AUDIT_EVENT_LEN or len(enc) != 50 + AUDIT_EVENT_LEN[tag]:
        return False
    if tag == 0x03 and enc[51] not in range(1, 6):
        return False
    if tag == 0x24 and enc[-1] not in (0, 1):
        return False
    if tag == 0x56 and (enc[111] not in (1, 2) or enc[112] not in (1, 2, 3)):
        return False
    return True


class AuditFaultFound(Exception):
    def __init__(self, fault):
        super().__init__(fault["fault"])
        self.fault = fault


def _audit_fault(kind, **fields):
    return AuditFaultFound(dict({"fault": kind}, **fields))


class AuditLogVerifier:
    """docs/audit.md §7–§8, written from the decision rules: a stream of records and checkpoints,
    the first fault raised as AuditFaultFound. Records are given as their encodings (§4); only
    the sequence field, the previous hash and the record hash are read."""

    def __init__(self, chain_id, signer_public):
        self.chain_id = chain_id
        self.public = signer_public
        self.genesis = sha256(b"Hushwire v1 audit genesis" + chain_id)
        self.genesis_signed = False  # a checkpoint at count 0 named the genesis hash
        self.expected = 0
        self.head = self.genesis
        self.tip = None  # {"in_link_ok", "predecessor_signed", "signed_head"}
        self.placed = {}  # sequence -> hash of the record placed there (the last 1024)
        self.waiting = {}  # count -> head, checkpoints ahead of `expected`
        self.held = None  # ("renumbered", r) or ("skipped", r) or ("stray", r, k) or ("gap", k)
        self.valid_checkpoints = 0
        self.signed_count = 0
        self.position = 0  # records pushed

    @staticmethod
    def _record(enc):
        return {"sequence": int.from_bytes(enc[2:10], "big"), "previous_hash": enc[18:50],
                "hash": sha256(b"Hushwire v1 audit record" + enc)}

    # Rule T: judge the tip; `next_links` is whether the next record links to it (None: no next).
    def judge_tip(self, next_links):
        t = self.tip
        if t is None:
            return
        seq = self.expected - 1
        signed = None if t["signed_head"] is None else (t["signed_head"] == self.head)
        if t["in_link_ok"]:
            if signed is False:
                if next_links is True:
                    raise _audit_fault("CheckpointMismatch", count=self.expected)
                raise _audit_fault("Modified", sequence=seq)
            return
        if t["predecessor_signed"]:
            raise _audit_fault("Modified", sequence=seq)
        tip_intact = signed if signed is not None else (next_links if next_links is not None else True)
        if not tip_intact:
            raise _audit_fault("Modified", sequence=seq)
        if seq == 0:
            raise _audit_fault("WrongChain")
        raise _audit_fault("Modified", sequence=seq - 1)

    def place(self, r, in_link_ok):
        if self.tip is None:
            predecessor_signed = self.genesis_signed
        else:
            predecessor_signed = self.tip["signed_head"] == self.head
        self.head = r["hash"]
        self.placed[r["sequence"]] = r["hash"]
        self.placed.pop(r["sequence"] - 1024, None)
        self.expected += 1
        self.tip = {"in_link_ok": in_link_ok, "predecessor_signed": predecessor_signed,
                    "signed_head": self.waiting.pop(self.expected, None)}

    def repeat(self, r):
        same = self.placed.get(r["sequence"]) == r["hash"]
        return _audit_fault("Duplicated" if same else "Inserted", sequence=r["sequence"])

    def in_order(self, r):
        """Rules 1–5 for a record arriving while nothing is held."""
        links = r["previous_hash"] == self.head
        if r["sequence"] == self.expected:  # rules 1 and 2
            self.judge_tip(links)
            self.place(r, links)
        elif links:  # rule 3
            self.judge_tip(True)
            self.held = ("renumbered", r)
        elif r["sequence"] < self.expected:  # rule 4
            if r["sequence"] != self.expected - 1:
                self.judge_tip(None)
            raise self.repeat(r)
        else:  # rule 5
            self.held = ("skipped", r)

    def push_encoded_record(self, enc):
        """A record that does not decode is Malformed at its position in the stream."""
        position = self.position
        self.position += 1
        if not audit_record_decodes(enc):
            raise _audit_fault("Malformed", position=position)
        self.push_record(enc)

    def push_record(self, enc):
        r = self._record(enc)
        held = self.held
        if held is None:
            return self.in_order(r)
        if held[0] == "renumbered":
            if r["sequence"] == self.expected and r["previous_hash"] == self.head:
                raise _audit_fault("Inserted", sequence=held[1]["sequence"])
            raise _audit_fault("Modified", sequence=self.expected)
        if held[0] == "skipped":
            if r["sequence"] == self.expected and r["previous_hash"] == self.head:
                self.held = ("stray", held[1], self.expected)
                return self.in_order(r)
            self.judge_tip(None)
            self.held = ("gap", self.expected)
            if r["sequence"] == self.expected:
                raise _audit_fault("Reordered", sequence=self.expected)
            return
        if held[0] == "gap":
            if r["sequence"] == held[1]:
                raise _audit_fault("Reordered", sequence=held[1])
            return
        _, stray, k = held
        inserted = _audit_fault("Inserted", sequence=stray["sequence"])
        if r["sequence"] == stray["sequence"]:  # (a)
            if r["hash"] == stray["hash"]:
                raise _audit_fault("Duplicated", sequence=stray["sequence"])
            raise inserted
        if self.expected == stray["sequence"]:  # (b)
            if stray["previous_hash"] == self.head and r["previous_hash"] == stray["hash"]:
                raise _audit_fault("Reordered", sequence=k)
            raise inserted
        if r["sequence"] == self.expected and r["previous_hash"] == self.head:  # (c)
            try:
                return self.in_order(r)
            except AuditFaultFound:
                raise inserted
        raise inserted  # (d)

    def push_checkpoint(self, enc):
        chain_id, count = enc[2:18], int.from_bytes(enc[18:26], "big")
        head = enc[26:58]
        if chain_id != self.chain_id:
            raise _audit_fault("WrongChain")
        if not ed25519_verify(self.public, b"Hushwire v1 audit checkpoint" + enc[2:66], enc[66:130]):
            raise _audit_fault("BadCheckpointSignature", count=count)
        self.valid_checkpoints += 1
        self.signed_count = max(self.signed_count, count)
        if self.held is not None and self.held[0] == "gap":
            return
        if count < self.expected:
            raise _audit_fault("CheckpointOutOfOrder", count=count)
        if count == self.expected:
            if self.tip is None:
                if head != self.genesis:
                    raise _audit_fault("CheckpointMismatch", count=count)
                self.genesis_signed = True
            elif self.tip["signed_head"] is not None and self.tip["signed_head"] != head:
                raise _audit_fault("CheckpointMismatch", count=count)
            else:
                self.tip["signed_head"] = head
            return
        if self.waiting.get(count, head) != head:
            raise _audit_fault("CheckpointMismatch", count=count)
        self.waiting[count] = head

    def finish(self):
        held = self.held
        if held is not None:
            if held[0] == "gap":
                raise _audit_fault("Removed", sequence=held[1])
            if held[0] == "renumbered":
                raise _audit_fault("Modified", sequence=self.expected)
            if held[0] == "skipped":
                self.judge_tip(None)
                raise _audit_fault("Removed", sequence=self.expected)
            _, stray, k = held
            try:
                self.judge_tip(None)
                fits = self.expected == stray["sequence"] and stray["previous_hash"] == self.head
            except AuditFaultFound:
                fits = False
            raise _audit_fault("Reordered", sequence=k) if fits else _audit_fault("Inserted", sequence=stray["sequence"])
        self.judge_tip(None)
        if self.waiting:
            raise _audit_fault("Truncated", checkpoint_count=max(self.waiting), records=self.expected)
        return {"records": self.expected, "checkpoints": self.valid_checkpoints,
                "unsigned_tail": self.expected - self.signed_count, "head_hash": self.head.hex()}


def verify_audit(chain_id, signer_public, record_encodings, checkpoint_encodings):
    """audit::verify (docs/audit.md §7): checkpoints sorted by count, each pushed right after the
    record at its count's position."""
    v = AuditLogVerifier(chain_id, signer_public)
    due = sorted(checkpoint_encodings, key=lambda enc: int.from_bytes(enc[18:26], "big"))
    try:
        for i, enc in enumerate(record_encodings):
            while due and int.from_bytes(due[0][18:26], "big") <= i:
                v.push_checkpoint(due.pop(0))
            v.push_encoded_record(enc)
        for enc in due:
            v.push_checkpoint(enc)
        return {"ok": v.finish()}
    except AuditFaultFound as e:
        return {"fault": e.fault}


def check_audit(c, aj):
    """audit.json: hashes, links and checkpoint signatures, from the published bytes alone."""
    chain_id = h(aj["chain_id"])
    genesis = sha256(b"Hushwire v1 audit genesis" + chain_id)
    c.eq("audit: genesis hash", h(aj["genesis_hash"]), genesis)
    c.eq("audit: signer public key", h(aj["signer_public"]), ed25519_public(h(aj["signer_secret"])))
    head = genesis
    hashes = {}
    for rec in aj["records"]:
        enc = h(rec["encoded"])
        seq = rec["sequence"]
        c.eq(f"audit: record {seq} header (version, type)", b"\x01\x40", enc[0:2])
        c.true(f"audit: record {seq} decodes (§3 tag and length)", audit_record_decodes(enc))
        c.eq(f"audit: record {seq} sequence field", seq, int.from_bytes(enc[2:10], "big"))
        c.eq(f"audit: record {seq} time field", rec["time_ms"], int.from_bytes(enc[10:18], "big"))
        c.eq(f"audit: record {seq} links to the previous hash", head, enc[18:50])
        head = sha256(b"Hushwire v1 audit record" + enc)
        c.eq(f"audit: record {seq} hash", h(rec["hash"]), head)
        hashes[seq + 1] = head
    secret = h(aj["signer_secret"])
    for cp in aj["checkpoints"]:
        enc = h(cp["encoded"])
        count = cp["count"]
        c.eq(f"audit: checkpoint {count} head is record {count - 1}'s hash", hashes.get(count), h(cp["head_hash"]))
        message = chain_id + count.to_bytes(8, "big") + h(cp["head_hash"]) + cp["time_ms"].to_bytes(8, "big")
        c.eq(f"audit: checkpoint {count} layout", b"\x01\x41" + message, enc[:66])
        signed = b"Hushwire v1 audit checkpoint" + message
        c.eq(f"audit: checkpoint {count} signature (deterministic Ed25519)", enc[66:130], ed25519_sign(secret, signed))
        c.true(f"audit: checkpoint {count} verifies", ed25519_verify(h(aj["signer_public"]), signed, enc[66:130]))
    verdict = aj["verdict"]
    c.eq("audit: verdict record count", len(aj["records"]), verdict["records"])
    c.eq("audit: verdict unsigned tail", len(aj["records"]) - max(cp["count"] for cp in aj["checkpoints"]), verdict["unsigned_tail"])
    check_audit_cases(c, aj, chain_id)
    return True


def check_audit_cases(c, aj, chain_id):
    """audit.json's tampered chains: the verdict of the §8 rules, implemented above."""
    public = h(aj["signer_public"])
    records = [h(r["encoded"]) for r in aj["records"]]
    checkpoints = [h(cp["encoded"]) for cp in aj["checkpoints"]]
    pick = lambda items, ref: items[ref] if isinstance(ref, int) else h(ref["encoded"])
    cases = aj["verification"]["cases"]
    kinds = set()
    for case in cases:
        log = [pick(records, ref) for ref in case["records"]]
        given = [pick(checkpoints, ref) for ref in case["checkpoints"]]
        verdict = verify_audit(chain_id, public, log, given)
        c.eq(f"audit: verify {case['name']}", case["verdict"], verdict)
        kinds.add(verdict.get("fault", {}).get("fault", "ok"))
    c.true("audit: the tampered chains cover every fault of §8 but CheckpointOutOfOrder (a use error)",
           kinds >= {"ok", "Malformed", "Modified", "Removed", "Inserted", "Duplicated", "Reordered", "Truncated",
                     "BadCheckpointSignature", "CheckpointMismatch", "WrongChain"}, sorted(kinds))


# ---------------------------------------------------------------------------------------------
# Client payload (docs/client.md §4): the plaintext a client encrypts with a session
# ---------------------------------------------------------------------------------------------

PAYLOAD_VERSION = 0x01
# 65 469: a sent copy (§4.6), the largest payload, puts 67 bytes around the content (§4.1).
PAYLOAD_MAX_CONTENT_LEN = MAX_PLAINTEXT_LEN - 67
PAYLOAD_MAX_RECEIPT_IDS = 256
# conversations.md §8: a conversation message's 55 bytes around its content fit one session message.
PAYLOAD_MAX_CONVERSATION_CONTENT_LEN = MAX_PLAINTEXT_LEN - 55
PAYLOAD_MAX_SHARED_MESSAGES = 64
PAYLOAD_MAX_NOTE_LEN = 200
RECALL_WINDOW_MS = 600_000
RESET_REASONS = {0x01: "Undecryptable", 0x02: "KeyReused", 0x03: "TooFarAhead"}


class PayloadError(Exception):
    """A refusal, as §4.4 names it: the `DecodeError` variant and its fields."""

    def __init__(self, error, **fields):
        super().__init__(error)
        self.json = {"error": error, **fields}


def decode_payload(buf):
    """§4: fields are read in order, and the first check that fails is the error (§4.4)."""
    pos = 0

    def take(n, field):
        nonlocal pos
        if pos + n > len(buf):
            raise PayloadError("Truncated", field=field)
        out = buf[pos : pos + n]
        pos += n
        return out

    def message_fields(out, max_content):
        """message_id, sent_at_ms, content_type, content: the end of kinds 0x01, 0x04, 0x05."""
        out["message_id"] = take(16, "message id").hex()
        out["sent_at_ms"] = int.from_bytes(take(8, "sent at"), "big")
        out["content_type"] = take(1, "content type")[0]
        n = int.from_bytes(take(4, "content"), "big")
        if n > max_content:
            raise PayloadError("TooLong", field="content", len=n, max=max_content)
        content = take(n, "content")
        out["content"] = content.hex()
        # The decoder does not check UTF-8 (§4.4); the vectors show text content as text too.
        if out["content_type"] == 0x01:
            try:
                out["content_text"] = content.decode("utf-8")
            except UnicodeDecodeError:
                pass

    version = take(1, "payload version")[0]
    if version != PAYLOAD_VERSION:
        raise PayloadError("UnsupportedVersion", version=version)
    kind = take(1, "payload kind")[0]
    if kind in (0x01, 0x04):  # §4.1 message, §4.6 sent copy (the recipient, then a message)
        out = {"kind": kind}
        if kind == 0x04:
            out["recipient_fingerprint"] = take(32, "recipient fingerprint").hex()
            out["recipient_device"] = int.from_bytes(take(4, "recipient device"), "big")
        message_fields(out, PAYLOAD_MAX_CONTENT_LEN)
    elif kind == 0x02:  # §4.2 receipt
        count = int.from_bytes(take(2, "receipt count"), "big")
        if not 1 <= count <= PAYLOAD_MAX_RECEIPT_IDS:
            raise PayloadError("InvalidValue", field="receipt count")
        out = {"kind": 2, "message_ids": [take(16, "message id").hex() for _ in range(count)]}
    elif kind == 0x03:  # §4.3 session reset
        reason = take(1, "reset reason")[0]
        if reason not in RESET_REASONS:
            raise PayloadError("InvalidValue", field="reset reason")
        out = {"kind": 3, "reason": reason, "reason_name": RESET_REASONS[reason]}
    elif kind == 0x05:  # conversations.md §8.1 conversation message
        out = {"kind": 5, "conversation_id": take(16, "conversation id").hex(),
               "epoch": int.from_bytes(take(8, "epoch"), "big")}
        message_fields(out, PAYLOAD_MAX_CONVERSATION_CONTENT_LEN)
    elif kind == 0x06:  # §8.2 conversation receipt
        conversation = take(16, "conversation id").hex()
        status = take(1, "receipt status")[0]
        if status not in (0x01, 0x02):
            raise PayloadError("InvalidValue", field="receipt status")
        count = int.from_bytes(take(2, "receipt count"), "big")
        if not 1 <= count <= PAYLOAD_MAX_RECEIPT_IDS:
            raise PayloadError("InvalidValue", field="receipt count")
        out = {"kind": 6, "conversation_id": conversation, "status": status,
               "message_ids": [take(16, "message id").hex() for _ in range(count)]}
    elif kind == 0x07:  # §8.3 recall
        out = {"kind": 7, "conversation_id": take(16, "conversation id").hex(),
               "message_id": take(16, "message id").hex(),
               "recalled_at_ms": int.from_bytes(take(8, "recalled at"), "big")}
    elif kind == 0x08:  # §8.4 history share
        conversation = take(16, "conversation id").hex()
        count = int.from_bytes(take(2, "shared count"), "big")
        if not 1 <= count <= PAYLOAD_MAX_SHARED_MESSAGES:
            raise PayloadError("InvalidValue", field="shared count")
        shared = []
        for _ in range(count):
            fingerprint = take(32, "shared sender").hex()
            device = int.from_bytes(take(4, "shared sender"), "big")
            n = int.from_bytes(take(4, "shared message"), "big")
            if n > MAX_PLAINTEXT_LEN:
                raise PayloadError("TooLong", field="shared message", len=n, max=MAX_PLAINTEXT_LEN)
            inner = take(n, "shared message")
            if inner[:2] != bytes([PAYLOAD_VERSION, 0x05]):  # a share never nests a share
                raise PayloadError("InvalidValue", field="shared message")
            try:
                message = decode_payload(inner)
            except PayloadError:
                raise PayloadError("InvalidValue", field="shared message")
            if message["kind"] != 5 or message["conversation_id"] != conversation:
                raise PayloadError("InvalidValue", field="shared message")
            shared.append({"sender_fingerprint": fingerprint, "sender_device": device, "message": message})
        out = {"kind": 8, "conversation_id": conversation, "shared": shared}
    elif kind == 0x09:  # §8.5 staff note: one line under clinic.md §1's name rules, 1..200 bytes
        conversation = take(16, "conversation id").hex()
        n = take(1, "note")[0]
        if n > PAYLOAD_MAX_NOTE_LEN:
            raise PayloadError("TooLong", field="note", len=n, max=PAYLOAD_MAX_NOTE_LEN)
        raw = take(n, "note")
        try:
            note = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("InvalidValue", field="note")
        import unicodedata
        if (not note or note != note.strip()
                or any(unicodedata.category(ch) == "Cc" or ord(ch) in FORBIDDEN_IN_NAME for ch in note)):
            raise PayloadError("InvalidValue", field="note")
        out = {"kind": 9, "conversation_id": conversation, "note": note}
    else:
        raise PayloadError("InvalidValue", field="payload kind")
    if pos != len(buf):
        raise PayloadError("TrailingBytes", structure="payload")
    return out


def encode_payload(p):
    """§4, from the fields alone."""
    out = bytes([PAYLOAD_VERSION, p["kind"]])
    if p["kind"] == 4:
        out += h(p["recipient_fingerprint"]) + p["recipient_device"].to_bytes(4, "big")
    if p["kind"] in (1, 4):
        content = h(p["content"])
        out += h(p["message_id"]) + p["sent_at_ms"].to_bytes(8, "big") + bytes([p["content_type"]])
        out += len(content).to_bytes(4, "big") + content
    elif p["kind"] == 2:
        out += len(p["message_ids"]).to_bytes(2, "big") + b"".join(h(i) for i in p["message_ids"])
    elif p["kind"] == 3:
        out += bytes([p["reason"]])
    elif p["kind"] == 5:
        content = h(p["content"])
        out += h(p["conversation_id"]) + p["epoch"].to_bytes(8, "big")
        out += h(p["message_id"]) + p["sent_at_ms"].to_bytes(8, "big") + bytes([p["content_type"]])
        out += len(content).to_bytes(4, "big") + content
    elif p["kind"] == 6:
        out += h(p["conversation_id"]) + bytes([p["status"]])
        out += len(p["message_ids"]).to_bytes(2, "big") + b"".join(h(i) for i in p["message_ids"])
    elif p["kind"] == 7:
        out += h(p["conversation_id"]) + h(p["message_id"]) + p["recalled_at_ms"].to_bytes(8, "big")
    elif p["kind"] == 8:
        out += h(p["conversation_id"]) + len(p["shared"]).to_bytes(2, "big")
        for m in p["shared"]:
            inner = encode_payload(m["message"])
            out += h(m["sender_fingerprint"]) + m["sender_device"].to_bytes(4, "big")
            out += len(inner).to_bytes(4, "big") + inner
    else:
        note = p["note"].encode("utf-8")
        out += h(p["conversation_id"]) + bytes([len(note)]) + note
    return out


def check_payloads(c, pj):
    """payloads.json: each valid encoding decodes, by §4's layout alone, to the published fields
    and is re-encoded from them byte for byte; each invalid one is refused with its error."""
    c.eq("payloads: version", PAYLOAD_VERSION, pj["payload_version"])
    c.eq("payloads: MAX_CONTENT_LEN", PAYLOAD_MAX_CONTENT_LEN, pj["max_content_len"])
    c.eq("payloads: MAX_RECEIPT_IDS", PAYLOAD_MAX_RECEIPT_IDS, pj["max_receipt_ids"])
    c.eq("payloads: MAX_CONVERSATION_CONTENT_LEN (65 536 - 55)", PAYLOAD_MAX_CONVERSATION_CONTENT_LEN,
         pj["max_conversation_content_len"])
    c.eq("payloads: MAX_SHARED_MESSAGES", PAYLOAD_MAX_SHARED_MESSAGES, pj["max_shared_messages"])
    c.eq("payloads: MAX_NOTE_LEN", PAYLOAD_MAX_NOTE_LEN, pj["max_note_len"])
    c.eq("payloads: RECALL_WINDOW_MS", RECALL_WINDOW_MS, pj["recall_window_ms"])
    seen = set()
    for v in pj["valid"]:
        name = v["name"]
        published = {k: x for k, x in v.items() if k not in ("name", "encoded")}
        try:
            decoded = decode_payload(h(v["encoded"]))
        except PayloadError as e:
            c.fail(f"payloads: `{name}` decodes", [f"refused: {e.json}"])
            continue
        c.eq(f"payloads: `{name}` fields", published, decoded)
        c.eq(f"payloads: `{name}` re-encodes", h(v["encoded"]), encode_payload(published))
        seen.add((v["kind"], v.get("reason")))
    c.eq("payloads: each kind and reset reason",
         {(1, None), (2, None), (3, 1), (3, 2), (3, 3), (4, None), (5, None), (6, None), (7, None), (8, None),
          (9, None)}, seen)
    for v in pj["invalid"]:
        name = v["name"]
        try:
            decoded = decode_payload(h(v["encoded"]))
            c.fail(f"payloads: invalid `{name}` is refused", [f"decoded to {decoded}"])
        except PayloadError as e:
            c.eq(f"payloads: invalid `{name}` is refused with its error", v["error"], e.json)
    check_padding(c, pj)
    return True


PADDING_BLOCK = 256  # client.md §4.5


def pad_payload(encoded):
    """§4.5: payload || 0x00 * k, k the fewest bytes (0 to 255) making the length a multiple of 256."""
    return encoded + bytes(-len(encoded) % PADDING_BLOCK)


def decode_padded_payload(buf):
    """§4.5: decode the payload from the start, then every remaining byte must be 0x00."""
    pos = len(encode_payload(decode_payload_prefix(buf)))
    if any(buf[pos:]):
        raise PayloadError("InvalidValue", field="padding")
    return decode_payload(buf[:pos])


def decode_payload_prefix(buf):
    """The payload at the start of `buf` (§4's layout gives its length), ignoring what follows."""
    for end in range(min(len(buf), 2), len(buf) + 1):
        try:
            return decode_payload(buf[:end])
        except PayloadError as e:
            if e.json["error"] != "Truncated":
                raise
    return decode_payload(buf)


def check_padding(c, pj):
    """payloads.json `padded` and `padded_invalid`, by client.md §4.5 alone."""
    c.eq("payloads: padding block", PADDING_BLOCK, pj["padding_block"])
    valid = {v["name"]: v for v in pj["valid"]}
    names = set()
    for v in pj["padded"]:
        name, padded = v["name"], h(v["padded"])
        encoded = h(valid[name]["encoded"])
        names.add(name)
        c.eq(f"payloads: padded `{name}` is the encoding and zeros to a multiple of 256", pad_payload(encoded), padded)
        c.true(f"payloads: padded `{name}` length is the next multiple of 256",
               len(padded) % PADDING_BLOCK == 0 and len(padded) - PADDING_BLOCK < len(encoded) <= len(padded),
               f"{len(encoded)} -> {len(padded)}")
        c.true(f"payloads: padded `{name}` tail is zeros", not any(padded[len(encoded):]))
        published = {k: x for k, x in valid[name].items() if k not in ("name", "encoded")}
        try:
            c.eq(f"payloads: padded `{name}` decodes to its fields", published, decode_padded_payload(padded))
        except PayloadError as e:
            c.fail(f"payloads: padded `{name}` decodes to its fields", [f"refused: {e.json}"])
        tampered = padded[:-1] + b"\x01"
        try:
            decode_padded_payload(tampered)
            c.fail(f"payloads: padded `{name}` with a non-zero last byte is refused", ["decoded"])
        except PayloadError as e:
            c.eq(f"payloads: padded `{name}` with a non-zero last byte is refused",
                 {"error": "InvalidValue", "field": "padding"}, e.json)
    c.eq("payloads: padded vectors for the message and the receipt", {"message", "receipt of two messages"}, names)
    for v in pj["padded_invalid"]:
        try:
            decoded = decode_padded_payload(h(v["padded"]))
            c.fail(f"payloads: padded invalid `{v['name']}` is refused", [f"decoded to {decoded}"])
        except PayloadError as e:
            c.eq(f"payloads: padded invalid `{v['name']}` is refused with its error", v["error"], e.json)


# ---------------------------------------------------------------------------------------------
# Relay login (docs/relay-protocol.md §3.2): the relay's signed challenge and the device's answer
# ---------------------------------------------------------------------------------------------

SIG_RELAY_CHALLENGE = b"Hushwire v2 relay challenge"
SIG_RELAY_LOGIN = b"Hushwire v2 relay login"
RELAY_KEY_FINGERPRINT = b"Hushwire v2 relay key fingerprint"


def relay_challenge(relay_secret, nonce, expires_at_ms):
    """§3.2 step 1: (relay_key, signed bytes after the label, signature, 136-byte body)."""
    relay_key = ed25519_public(relay_secret)
    signed = relay_key + nonce + expires_at_ms.to_bytes(8, "big")
    signature = ed25519_sign(relay_secret, SIG_RELAY_CHALLENGE + signed)
    return relay_key, signed, signature, nonce + relay_key + expires_at_ms.to_bytes(8, "big") + signature


def check_relay_login(c, rj, keys):
    c.eq("relay login: label lengths (27, 23)", (27, 23), (len(SIG_RELAY_CHALLENGE), len(SIG_RELAY_LOGIN)))
    secret, nonce, expires = h(rj["relay_secret_key"]), h(rj["nonce"]), rj["expires_at_ms"]
    relay_key, signed, signature, body = relay_challenge(secret, nonce, expires)
    c.eq("relay login: relay_key from its secret", h(rj["relay_key"]), relay_key)
    c.eq("relay login: relay_key_fingerprint = SHA-256(RELAY_KEY_FINGERPRINT || relay_key)",
         h(rj["relay_key_fingerprint"]), sha256(RELAY_KEY_FINGERPRINT + relay_key))
    c.eq("relay login: challenge signed bytes (72)", h(rj["challenge_signed_message"]), signed)
    c.eq("relay login: relay_signature", h(rj["relay_signature"]), signature)
    c.true("relay login: relay_signature verifies under relay_key",
           ed25519_verify(relay_key, SIG_RELAY_CHALLENGE + signed, h(rj["relay_signature"])))
    c.eq("relay login: challenge body (136 bytes)", h(rj["challenge"]), body)

    # The device: Alice of keys.json, whose identity signing key has the Ed25519 seed draws[0].
    alice = keys["alice"]
    seed = h(alice["draws"][0])
    device_id = rj["device_id"]
    c.eq("relay login: the device is keys.json alice", (alice["identity_key"], alice["device_id"]),
         (rj["identity_key"], device_id))
    login = signed + device_id.to_bytes(4, "big")
    c.eq("relay login: login signed bytes (76)", h(rj["login_signed_message"]), login)
    login_signature = ed25519_sign(seed, SIG_RELAY_LOGIN + login)
    c.eq("relay login: login_signature", h(rj["login_signature"]), login_signature)
    c.eq("relay login: credentials = identity_key || device_id || signature", h(rj["credentials"]),
         h(alice["identity_key"]) + device_id.to_bytes(4, "big") + login_signature)
    signing_public = h(rj["identity_key"])[:32]
    c.eq("relay login: identity_key starts with the Ed25519 key", h(alice["identity_signing_key"]), signing_public)
    c.true("relay login: the answer verifies for this relay",
           ed25519_verify(signing_public, SIG_RELAY_LOGIN + login, login_signature))

    # Negative case: another deployment's challenge with the same nonce and expiry.
    other = rj["other_relay"]
    o_key, o_signed, _, o_body = relay_challenge(h(other["relay_secret_key"]), nonce, expires)
    c.eq("relay login: other relay_key", h(other["relay_key"]), o_key)
    c.eq("relay login: other challenge body", h(other["challenge"]), o_body)
    verifies = ed25519_verify(signing_public, SIG_RELAY_LOGIN + o_signed + device_id.to_bytes(4, "big"),
                              login_signature)
    c.eq("relay login: the answer fails against another relay key", other["answer_verifies"], verifies)
    c.true("relay login: answer_verifies is false", other["answer_verifies"] is False)
    return True



# ---------------------------------------------------------------------------------------------
# Clinic identities (docs/clinic.md)
# ---------------------------------------------------------------------------------------------

CLINIC_VERSION = 1
ORG_KEY_FINGERPRINT = b"Hushwire v1 organization key fingerprint"
SIG_AGENT_CERTIFICATE = b"Hushwire v1 agent certificate"
SIG_REVOCATION_LIST = b"Hushwire v1 revocation list"
SIG_CLINIC_LINK = b"Hushwire v1 clinic link"
SIG_DEVICE_LIST = b"Hushwire v1 device list"
SIG_WIPE_COMMAND = b"Hushwire v1 wipe command"
ROLE_BITS = {"Agent": 0x01, "Supervisor": 0x02, "Admin": 0x04}


class Refused(Exception):
    """A clinic structure that does not decode; `field` is the field the spec names."""

    def __init__(self, field):
        super().__init__(field)
        self.field = field


class Cursor:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n, field):
        if self.at + n > len(self.data):
            raise Refused(field)
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def int(self, n, field):
        return int.from_bytes(self.take(n, field), "big")


def clinic_header(cur, type_byte):
    if cur.int(1, "version") != CLINIC_VERSION:
        raise Refused("version")
    if cur.int(1, "type") != type_byte:
        raise Refused("type")


# docs/clinic.md §1: refused in names besides the Cc category (inclusive ranges).
FORBIDDEN_NAME_RANGES = [(0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                         (0x180B, 0x180F), (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                         (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFFB), (0x1BCA0, 0x1BCA3),
                         (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF)]
FORBIDDEN_IN_NAME = {c for lo, hi in FORBIDDEN_NAME_RANGES for c in range(lo, hi + 1)}


def clinic_name(cur, field):
    """§1: 1..64 bytes of UTF-8, no control or bidi characters, no outer white space."""
    n = cur.int(1, field)
    if n > 64:
        raise Refused(field)
    raw = cur.take(n, field)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(field)
    import unicodedata
    if (not name or name != name.strip()
            or any(unicodedata.category(ch) == "Cc" or ord(ch) in FORBIDDEN_IN_NAME for ch in name)):
        raise Refused(field)
    return name


def parse_certificate(cur):
    """§3: the signed part, its fields and the signature."""
    start = cur.at
    clinic_header(cur, 0x20)
    org = cur.take(32, "organization key")
    serial = cur.int(8, "serial")
    subject = cur.take(128, "identity key")
    name = clinic_name(cur, "agent name")
    roles = cur.int(1, "roles")
    if roles == 0 or roles & ~0x07:
        raise Refused("roles")
    not_before, not_after = cur.int(8, "not before"), cur.int(8, "not after")
    if not_after <= not_before:
        raise Refused("validity period")
    signed = cur.data[start:cur.at]
    signature = cur.take(64, "certificate signature")
    return dict(org=org, serial=serial, subject=subject, name=name, roles=roles, not_before=not_before,
                not_after=not_after, signed=signed, signature=signature)


def parse_revocation_list(cur):
    start = cur.at
    clinic_header(cur, 0x21)
    org, sequence, issued_at = cur.take(32, "organization key"), cur.int(8, "sequence"), cur.int(8, "issued at")
    count = cur.int(2, "revoked count")
    if count > 10_000:
        raise Refused("revoked serials")
    serials = []
    for _ in range(count):
        s = cur.int(8, "revoked serial")
        if serials and s <= serials[-1]:
            raise Refused("revoked serials (must be strictly increasing)")
        serials.append(s)
    signed = cur.data[start:cur.at]
    return dict(org=org, sequence=sequence, issued_at=issued_at, serials=serials, signed=signed,
                signature=cur.take(64, "revocation list signature"))


def parse_device_list(cur):
    start = cur.at
    clinic_header(cur, 0x23)
    identity, sequence = cur.take(32, "identity fingerprint"), cur.int(8, "sequence")
    count = cur.int(1, "device count")
    if count == 0:
        raise Refused("device list (empty)")
    if count > 16:
        raise Refused("device list")
    devices = []
    for _ in range(count):
        d = cur.int(4, "device id")
        if devices and d <= devices[-1]:
            raise Refused("device ids (must be strictly increasing)")
        devices.append(d)
    signed = cur.data[start:cur.at]
    return dict(identity=identity, sequence=sequence, devices=devices, signed=signed,
                signature=cur.take(64, "device list signature"))


def parse_link(cur):
    start = cur.at
    clinic_header(cur, 0x22)
    org = cur.take(32, "organization key")
    name = clinic_name(cur, "clinic name")
    url = cur.take(cur.int(1, "relay url"), "relay url")
    signed = cur.data[start:cur.at]
    signature = cur.take(64, "clinic link signature")
    if not ed25519_verify(org, SIG_CLINIC_LINK + signed, signature):
        raise Refused("clinic link signature")
    return dict(org=org, name=name, url=url.decode("ascii"), signature=signature)


def parse_wipe(cur):
    start = cur.at
    clinic_header(cur, 0x24)
    fingerprint, device_id = cur.take(32, "target fingerprint"), cur.int(4, "target device id")
    issued_at, nonce = cur.int(8, "issued at"), cur.take(16, "nonce")
    issuer = parse_certificate(cur)
    signed = cur.data[start:cur.at]
    return dict(fingerprint=fingerprint, device_id=device_id, issued_at=issued_at, nonce=nonce, issuer=issuer,
                signed=signed, signature=cur.take(64, "wipe signature"))


def decode_whole(parse, data):
    cur = Cursor(data)
    value = parse(cur)
    if cur.at != len(data):
        raise Refused("trailing bytes")
    return value


def certificate_verdict(cert, org, now, revocations=None, role=None):
    """§3's checks, in order; the names are those clinic.json publishes."""
    if cert["org"] != org:
        return "WrongClinic"
    if not ed25519_verify(org, SIG_AGENT_CERTIFICATE + cert["signed"], cert["signature"]):
        return "BadSignature"
    if now < cert["not_before"]:
        return f"NotYetValid {{ not_before: {cert['not_before']} }}"
    if now >= cert["not_after"]:
        return f"Expired {{ not_after: {cert['not_after']} }}"
    if revocations is not None and cert["serial"] in revocations["serials"]:
        return f"Revoked {{ serial: {cert['serial']} }}"
    if role is not None and not cert["roles"] & ROLE_BITS[role]:
        return f"MissingRole({role})"
    return "accepted"


def wipe_verdict(wipe, device, org, now, revocations):
    """§6: target, clock, the issuer's admin certificate at issued_at, the issuer's signature."""
    if (wipe["fingerprint"], wipe["device_id"]) != device:
        return "WrongTarget"
    if wipe["issued_at"] > now + 300:
        return "FromTheFuture"
    verdict = certificate_verdict(wipe["issuer"], org, wipe["issued_at"], revocations, "Admin")
    if verdict != "accepted":
        return f"Certificate({verdict})"
    if not ed25519_verify(wipe["issuer"]["subject"][:32], SIG_WIPE_COMMAND + wipe["signed"], wipe["signature"]):
        return "BadSignature"
    return "accepted"


def check_clinic(c, cj, keys):
    import base64
    org_secret, other_secret = h(cj["org_secret_key"]), h(cj["other_org_secret_key"])
    org = ed25519_public(org_secret)
    c.eq("clinic: org_key from its secret", h(cj["org_key"]), org)
    c.eq("clinic: org_key_fingerprint = SHA-256(ORG_KEY_FINGERPRINT || org_key)",
         h(cj["org_key_fingerprint"]), sha256(ORG_KEY_FINGERPRINT + org))

    # §2: the link, rebuilt from its fields and signed.
    name, url = cj["clinic_name"].encode(), cj["relay_url"].encode()
    signed = bytes([1, 0x22]) + org + bytes([len(name)]) + name + bytes([len(url)]) + url
    link = signed + ed25519_sign(org_secret, SIG_CLINIC_LINK + signed)
    c.eq("clinic: link bytes", h(cj["link"]), link)
    c.eq("clinic: link text = prefix || base64url(link) without padding", cj["link_text"],
         "hushwire-clinic:" + base64.urlsafe_b64encode(link).decode().rstrip("="))
    parsed = decode_whole(parse_link, link)
    c.eq("clinic: link decodes to its fields", (parsed["name"], parsed["url"]), (cj["clinic_name"], cj["relay_url"]))

    # §3: certificates, rebuilt from keys.json's identities.
    def certificate(secret, serial, subject, name, roles):
        n = name.encode()
        body = (bytes([1, 0x20]) + ed25519_public(secret) + serial.to_bytes(8, "big") + subject + bytes([len(n)]) + n
                + bytes([roles]) + cj["not_before"].to_bytes(8, "big") + cj["not_after"].to_bytes(8, "big"))
        return body + ed25519_sign(secret, SIG_AGENT_CERTIFICATE + body)

    alice_id, bob_id = h(keys["alice"]["identity_key"]), h(keys["bob"]["account"]["identity_key"])
    agent_bytes = certificate(org_secret, 1, alice_id, "Dr. Ada Okafor", 0x03)
    admin_bytes = certificate(org_secret, 2, bob_id, "Front Desk Admin", 0x04)
    c.eq("clinic: agent certificate (Alice, agent+supervisor, serial 1)", h(cj["agent_certificate"]), agent_bytes)
    c.eq("clinic: admin certificate (Bob, admin, serial 2)", h(cj["admin_certificate"]), admin_bytes)
    c.eq("clinic: foreign certificate (another clinic's key)", h(cj["foreign_certificate"]),
         certificate(other_secret, 1, alice_id, "Dr. Ada Okafor", 0x03))
    agent = decode_whole(parse_certificate, agent_bytes)
    admin = decode_whole(parse_certificate, admin_bytes)
    foreign = decode_whole(parse_certificate, h(cj["foreign_certificate"]))

    # §4: the revocation list.
    rl = cj["revocation_list"]
    body = (bytes([1, 0x21]) + org + rl["sequence"].to_bytes(8, "big") + rl["issued_at"].to_bytes(8, "big")
            + len(rl["serials"]).to_bytes(2, "big") + b"".join(s.to_bytes(8, "big") for s in sorted(rl["serials"])))
    c.eq("clinic: revocation list bytes", h(rl["bytes"]), body + ed25519_sign(org_secret, SIG_REVOCATION_LIST + body))
    revocations = decode_whole(parse_revocation_list, h(rl["bytes"]))
    c.true("clinic: revocation list verifies under org_key",
           ed25519_verify(org, SIG_REVOCATION_LIST + revocations["signed"], revocations["signature"]))

    # §5: Alice's device list, signed by her identity (Ed25519 seed = keys.json alice.draws[0]).
    dl = cj["device_list"]
    alice_fp = h(keys["alice"]["fingerprint"])
    body = (bytes([1, 0x23]) + alice_fp + dl["sequence"].to_bytes(8, "big") + bytes([len(dl["devices"])])
            + b"".join(d.to_bytes(4, "big") for d in dl["devices"]))
    alice_seed, bob_seed = h(keys["alice"]["draws"][0]), h(keys["bob"]["account"]["draws"][0])
    c.eq("clinic: device list bytes", h(dl["bytes"]), body + ed25519_sign(alice_seed, SIG_DEVICE_LIST + body))
    devices = decode_whole(parse_device_list, h(dl["bytes"]))

    def device_list_verdict(fingerprint, signing_key):
        if devices["identity"] != fingerprint:
            return "WrongIdentity"
        ok = ed25519_verify(signing_key, SIG_DEVICE_LIST + devices["signed"], devices["signature"])
        return "accepted" if ok else "BadSignature"

    # §6: Bob's wipe of Alice's device 2, and the same order made by Alice (an agent).
    wc = cj["wipe_command"]
    body = (bytes([1, 0x24]) + alice_fp + wc["target_device_id"].to_bytes(4, "big") + wc["issued_at"].to_bytes(8, "big")
            + h(wc["nonce"]) + admin_bytes)
    c.eq("clinic: wipe command bytes (signed by Bob's identity)", h(wc["bytes"]),
         body + ed25519_sign(bob_seed, SIG_WIPE_COMMAND + body))
    wipe = decode_whole(parse_wipe, h(wc["bytes"]))
    agent_wipe = decode_whole(parse_wipe, h(cj["agent_wipe_command"]))
    c.eq("clinic: the agent's wipe embeds the agent certificate", agent_wipe["issuer"]["signed"], agent["signed"])

    ch = cj["checks"]
    now = ch["now"]
    target = (alice_fp, wc["target_device_id"])
    recomputed = {
        "now": now,
        "agent_certificate": certificate_verdict(agent, org, now),
        "agent_certificate_with_revocation_list": certificate_verdict(agent, org, now, revocations),
        "agent_certificate_expired": certificate_verdict(agent, org, cj["not_after"]),
        "agent_certificate_not_yet_valid": certificate_verdict(agent, org, cj["not_before"] - 1),
        "agent_certificate_as_admin": certificate_verdict(agent, org, now, None, "Admin"),
        "admin_certificate_as_admin": certificate_verdict(admin, org, now, revocations, "Admin"),
        "foreign_certificate": certificate_verdict(foreign, org, now),
        "device_list_for_alice": device_list_verdict(alice_fp, h(keys["alice"]["identity_signing_key"])),
        "device_list_for_bob": device_list_verdict(h(keys["bob"]["account"]["fingerprint"]), h(keys["bob"]["account"]["identity_signing_key"])),
        "wipe_for_target": wipe_verdict(wipe, target, org, now, revocations),
        "wipe_for_another_device": wipe_verdict(wipe, (alice_fp, 1), org, now, revocations),
        "wipe_signed_by_an_agent": wipe_verdict(agent_wipe, target, org, now, None),
    }
    for k in CLINIC_CHECKS:
        c.eq(f"clinic: check {k}", ch[k], recomputed[k])

    parsers = {"clinic link": parse_link, "agent certificate": parse_certificate,
               "revocation list": parse_revocation_list, "device list": parse_device_list}
    for case in cj["invalid"]:
        try:
            decode_whole(parsers[case["structure"]], h(case["bytes"]))
            got = "decoded"
        except Refused as e:
            got = e.field
        c.eq(f"clinic: refused: {case['name']}", case["field"], got)
    return True


LINK_SLOT = b"Hushwire v1 link slot"
KDF_LINK_KEY = b"Hushwire v1 link key"


def check_linking(c, lj, keys):
    """docs/clinic.md §5.1: the code's text, slot and key, and the sealed provisioning message."""
    import base64
    secret = h(lj["code_draws"][0])
    c.eq("linking: draw sizes (secret 16, nonce 24)", [16, 24],
         [len(h(lj["code_draws"][0])), len(h(lj["seal_draws"][0]))])
    text = "hushwire-link:" + base64.urlsafe_b64encode(secret + lj["relay_url"].encode()).decode().rstrip("=")
    c.eq("linking: code text = prefix || base64url(secret || relay_url)", lj["code_text"], text)
    slot = sha256(LINK_SLOT + secret)
    c.eq("linking: slot = SHA-256(LINK_SLOT || secret)", h(lj["slot"]), slot)
    key = hkdf(bytes(32), secret, KDF_LINK_KEY, 32)
    nonce = h(lj["seal_draws"][0])
    alice = keys["alice"]
    extra = h(lj["extra"])
    plaintext = (h(alice["draws"][0]) + h(alice["draws"][1]) + lj["device_id"].to_bytes(4, "big")
                 + h(lj["relay_key"]) + len(extra).to_bytes(4, "big") + extra)
    sealed = bytes([1]) + nonce + xchacha20poly1305_encrypt(key, nonce, bytes([1]) + slot, plaintext)
    c.eq("linking: sealed = 0x01 || nonce || XChaCha20-Poly1305(key, nonce, 0x01 || slot, plaintext)",
         h(lj["sealed"]), sealed)
    other = hkdf(bytes(32), bytes(16), KDF_LINK_KEY, 32)
    opened = xchacha20poly1305_decrypt(other, nonce, bytes([1]) + slot, h(lj["sealed"])[25:])
    c.true("linking: another code's key does not open it", opened is None)
    return True


# docs/conversations.md §4: membership changes and the rules every client checks.
SIG_MEMBERSHIP_CHANGE = b"Hushwire v1 membership change"
MEMBERSHIP_GENESIS = b"Hushwire v1 membership genesis"
MEMBERSHIP_CHANGE_HASH = b"Hushwire v1 membership change hash"
MEMBER_ROLES = {1: "patient", 2: "agent", 3: "supervisor"}
CHANGE_ACTIONS = {1: "add", 2: "remove"}
MAX_CONVERSATION_DEVICES = 32


def parse_change(cur):
    """§4.2: the fields, the signed part and the signature; form rules only."""
    start = cur.at
    if cur.int(1, "version") != 1:
        raise Refused("version")
    if cur.int(1, "type") != 0x70:
        raise Refused("type")
    conversation, epoch = cur.take(16, "conversation id"), cur.int(8, "epoch")
    previous, issued_at = cur.take(32, "previous hash"), cur.int(8, "issued at")
    action = CHANGE_ACTIONS.get(cur.int(1, "change action"))
    if action is None:
        raise Refused("change action")
    role = MEMBER_ROLES.get(cur.int(1, "member role"))
    if role is None:
        raise Refused("member role")
    member = cur.take(128, "identity key")
    count = cur.int(1, "change device count")
    if count == 0:
        raise Refused("change devices (empty)")
    if count > 16:
        raise Refused("change devices")
    devices = []
    for _ in range(count):
        d = cur.int(4, "device id")
        if devices and d <= devices[-1]:
            raise Refused("change devices (must be strictly increasing)")
        devices.append(d)

    def certificate(flag):
        present = cur.int(1, flag)
        if present not in (0, 1):
            raise Refused(flag)
        return parse_certificate(cur) if present else None

    member_cert = certificate("has member certificate")
    if (member_cert is not None) != (action == "add" and role != "patient"):
        raise Refused("member certificate (present exactly when staff is added)")
    signer, signer_device = cur.take(128, "identity key"), cur.int(4, "signer device id")
    signer_cert = certificate("has signer certificate")
    signed = cur.data[start:cur.at]
    signature = cur.take(64, "membership change signature")
    return dict(conversation=conversation, epoch=epoch, previous=previous, issued_at=issued_at, action=action,
                role=role, member=member, devices=devices, member_cert=member_cert, signer=signer,
                signer_device=signer_device, signer_cert=signer_cert, signed=signed, signature=signature,
                hash=sha256(MEMBERSHIP_CHANGE_HASH + signed + signature))


def identity_fingerprint(identity):
    return sha256(FINGERPRINT + identity[:64])


class MembershipRefused(Exception):
    pass


class MembershipVerifier:
    """§4.3, written from the table: apply() raises MembershipRefused with MembershipError's Debug
    form for the first rule a change breaks, and changes nothing then."""

    def __init__(self, conversation, org):
        self.conversation, self.org = conversation, org
        self.next_epoch, self.last_issued_at = 0, 0
        self.head = sha256(MEMBERSHIP_GENESIS + conversation + org)
        self.members = []  # [fingerprint, role, sorted devices, certificate serial or None]
        self.removed = set()  # (fingerprint, device)

    def member(self, fp):
        return next((m for m in self.members if m[0] == fp), None)

    def certificate_error(self, cert, subject, at, revocations, role=None):
        verdict = certificate_verdict(cert, self.org, at)
        if verdict != "accepted":
            return verdict
        if revocations is not None:
            if revocations["org"] != self.org:
                return "ForeignRevocationList"
            if at >= revocations["issued_at"] and cert["serial"] in revocations["serials"]:
                return f"Revoked {{ serial: {cert['serial']} }}"
        if cert["subject"] != subject:
            return "WrongSubject"
        if role is not None and not cert["roles"] & ROLE_BITS[role]:
            return f"MissingRole({role})"
        return None

    def check_patient_devices(self, ch, device_list):
        if device_list is None:
            return
        if device_list["identity"] != identity_fingerprint(ch["member"]):
            raise MembershipRefused("PatientDeviceList(WrongIdentity)")
        if not ed25519_verify(ch["member"][:32], SIG_DEVICE_LIST + device_list["signed"], device_list["signature"]):
            raise MembershipRefused("PatientDeviceList(BadSignature)")
        for d in ch["devices"]:
            if d not in device_list["devices"]:
                raise MembershipRefused(f"DeviceNotListed {{ device_id: {d} }}")

    def apply(self, ch, now, revocations=None, device_list=None):
        R = MembershipRefused
        if ch["conversation"] != self.conversation:
            raise R("WrongConversation")
        if ch["epoch"] < self.next_epoch:
            raise R(f"EpochRollback {{ expected: {self.next_epoch}, found: {ch['epoch']} }}")
        if ch["epoch"] > self.next_epoch:
            raise R(f"EpochGap {{ expected: {self.next_epoch}, found: {ch['epoch']} }}")
        if ch["previous"] != self.head:
            raise R("WrongPreviousHash")
        if ch["issued_at"] < self.last_issued_at:
            raise R(f"TimeWentBackwards {{ previous: {self.last_issued_at}, issued_at: {ch['issued_at']} }}")
        if ch["issued_at"] > now + 300:
            raise R(f"FromTheFuture {{ issued_at: {ch['issued_at']} }}")
        if not ed25519_verify(ch["signer"][:32], SIG_MEMBERSHIP_CHANGE + ch["signed"], ch["signature"]):
            raise R("BadSignature")
        if ch["signer_cert"] is not None:
            e = self.certificate_error(ch["signer_cert"], ch["signer"], ch["issued_at"], revocations)
            if e:
                raise R(f"SignerCertificate({e})")
        if ch["member_cert"] is not None:
            role = "Supervisor" if ch["role"] == "supervisor" else "Agent"
            e = self.certificate_error(ch["member_cert"], ch["member"], ch["issued_at"], revocations, role)
            if e:
                raise R(f"MemberCertificate({e})")
        signer, member = identity_fingerprint(ch["signer"]), identity_fingerprint(ch["member"])
        staff_signer = ch["signer_cert"] is not None
        claimed = any(m[1] == "agent" for m in self.members)
        if self.next_epoch == 0:
            if (ch["action"] != "add" or ch["role"] != "patient" or signer != member or staff_signer
                    or ch["signer_device"] not in ch["devices"]):
                raise R("NotOpenedByPatient")
            self.check_patient_devices(ch, device_list)
            return self.commit(ch, member)
        m = self.member(signer)
        if m is None or ch["signer_device"] not in m[2]:
            self_join = (signer == member and ch["action"] == "add" and ch["role"] != "patient" and staff_signer
                         and ch["signer_device"] in ch["devices"])
            if not self_join:
                if (signer, ch["signer_device"]) in self.removed:
                    raise R(f"SignerRemoved {{ device_id: {ch['signer_device']} }}")
                raise R("SignerNotMember")
            if ch["role"] == "agent" and claimed:
                # Rule 9, takeover: every agent on it was added under a certificate the
                # verifier's (clinic's) list names; they leave with the claim.
                agents = [m for m in self.members if m[1] == "agent"]
                if (revocations is None or revocations["org"] != self.org
                        or not all(m[3] is not None and m[3] in revocations["serials"] for m in agents)):
                    raise R("ClaimWhileClaimed")
                before = (self.members, self.removed)
                self.removed = self.removed | {(m[0], d) for m in agents for d in m[2]}
                self.members = [m for m in self.members if m[1] != "agent"]
                try:
                    return self.commit(ch, member)
                except MembershipRefused:
                    self.members, self.removed = before
                    raise
            return self.commit(ch, member)
        if staff_signer != (m[1] != "patient"):
            raise R("SignerCertificatePresence")
        if m[1] == "supervisor" and (ch["action"] != "remove" or member != signer):
            raise R("ReadOnlySigner")
        if m[1] == "patient":
            if member != signer or ch["role"] != "patient":
                raise R("PatientAddsStranger" if ch["action"] == "add" else "PatientRemovesStaff")
            if ch["action"] == "add":
                self.check_patient_devices(ch, device_list)
        if m[1] == "agent" and ch["role"] == "patient":
            raise R("StaffAddsPatientDevice" if ch["action"] == "add" else "StaffRemovesPatient")
        return self.commit(ch, member)

    def commit(self, ch, member):
        R = MembershipRefused
        current = self.member(member)
        if current is not None and current[1] != ch["role"]:
            raise R("RoleMismatch")
        members = [[f, r, list(d), serial] for f, r, d, serial in self.members]
        removed = set(self.removed)
        entry = next((x for x in members if x[0] == member), None)
        if ch["action"] == "add":
            if entry is None:
                entry = [member, ch["role"], [], None]
                members.append(entry)
            if ch["member_cert"] is not None:
                entry[3] = ch["member_cert"]["serial"]
            for d in ch["devices"]:
                if d in entry[2]:
                    raise R(f"AlreadyMember {{ device_id: {d} }}")
                entry[2].append(d)
            entry[2].sort()
            count = sum(len(x[2]) for x in members)
            if count > MAX_CONVERSATION_DEVICES:
                raise R(f"TooManyDevices {{ count: {count} }}")
            removed -= {(member, d) for d in ch["devices"]}
        else:
            if entry is None:
                raise R(f"NotAMember {{ device_id: {ch['devices'][0]} }}")
            for d in ch["devices"]:
                if d not in entry[2]:
                    raise R(f"NotAMember {{ device_id: {d} }}")
                entry[2].remove(d)
                removed.add((member, d))
            members = [x for x in members if x[2]]
        self.members, self.removed = members, removed
        self.next_epoch += 1
        self.head = ch["hash"]
        self.last_issued_at = ch["issued_at"]


MEMBERSHIP_PEOPLE = ("patient", "ada", "ben", "sue", "stranger")


def check_membership(c, mj):
    def shown_members(v):
        """The verifier's members as the vectors list them."""
        return [dict(member=ids[f] if ids[f] == "patient" else ids[f].capitalize(), role=r, devices=d)
                for f, r, d, _ in v.members]

    def verdict(v, change, now, revocations):
        """Applies `change` to the verifier `v` (§4.3): "accepted", or the refusal's name."""
        try:
            v.apply(change, now, revocations, device_list)
            return "accepted"
        except (MembershipRefused, Refused) as err:
            return str(err)
    """docs/conversations.md §4: identities, certificates and every change rebuilt from the spec, then
    the history and the invalid cases verified by MembershipVerifier."""
    import copy
    org_secret = h(mj["org_secret_key"])
    org = ed25519_public(org_secret)
    c.eq("membership: org_key from its secret", h(mj["org_key"]), org)
    conversation = h(mj["conversation_id"])
    people, ids = {}, {}
    certs = {"ada": (11, "Ada", 0x01), "ben": (12, "Ben", 0x01), "sue": (13, "Sue", 0x02)}
    for who in MEMBERSHIP_PEOPLE:
        pj = mj["people"][who]
        seed, dh_secret = h(pj["signing_seed"]), h(pj["dh_secret"])
        signing, dh = ed25519_public(seed), x25519_public(dh_secret)
        identity = signing + dh + ed25519_sign(seed, SIG_IDENTITY_BINDING + signing + dh)
        c.eq(f"membership: {who}'s identity key from its seeds", h(pj["identity_key"]), identity)
        c.eq(f"membership: {who}'s fingerprint", h(pj["fingerprint"]), identity_fingerprint(identity))
        cert = b""
        if who in certs:
            serial, name, roles = certs[who]
            n = name.encode()
            body = (bytes([1, 0x20]) + org + serial.to_bytes(8, "big") + identity + bytes([len(n)]) + n
                    + bytes([roles]) + mj["not_before"].to_bytes(8, "big") + mj["not_after"].to_bytes(8, "big"))
            cert = body + ed25519_sign(org_secret, SIG_AGENT_CERTIFICATE + body)
        c.eq(f"membership: {who}'s certificate", h(pj["certificate"]), cert)
        people[who] = dict(seed=seed, identity=identity, cert=cert)
        ids[identity_fingerprint(identity)] = who

    patient = people["patient"]
    body = (bytes([1, 0x23]) + identity_fingerprint(patient["identity"]) + (1).to_bytes(8, "big") + bytes([2])
            + (1).to_bytes(4, "big") + (2).to_bytes(4, "big"))
    c.eq("membership: the patient's device list (sequence 1, devices 1 and 2)", h(mj["patient_device_list"]),
         body + ed25519_sign(patient["seed"], SIG_DEVICE_LIST + body))
    device_list = decode_whole(parse_device_list, h(mj["patient_device_list"]))
    genesis = sha256(MEMBERSHIP_GENESIS + conversation + org)
    c.eq("membership: genesis_hash = SHA-256(MEMBERSHIP_GENESIS || conversation_id || org_key)",
         h(mj["genesis_hash"]), genesis)

    # §4.2: every change of the history, rebuilt from its fields.
    previous = genesis
    verifier = MembershipVerifier(conversation, org)
    prefixes = [copy.deepcopy(verifier)]
    for k, e in enumerate(mj["history"]):
        signer, member = people[e["signer"].lower()], people[e["member"].lower()]
        action = {"add": 1, "remove": 2}[e["action"]]
        role = {"patient": 1, "agent": 2, "supervisor": 3}[e["role"]]
        body = (bytes([1, 0x70]) + conversation + k.to_bytes(8, "big") + previous
                + (mj["t0"] + 60 * k).to_bytes(8, "big") + bytes([action, role]) + member["identity"]
                + bytes([len(e["devices"])]) + b"".join(d.to_bytes(4, "big") for d in e["devices"]))
        body += (b"\x01" + member["cert"]) if action == 1 and role != 1 else b"\x00"
        body += signer["identity"] + e["signer_device"].to_bytes(4, "big")
        body += (b"\x01" + signer["cert"]) if signer["cert"] else b"\x00"
        change = body + ed25519_sign(signer["seed"], SIG_MEMBERSHIP_CHANGE + body)
        c.eq(f"membership: change {k} ({e['what']}) bytes", h(e["bytes"]), change)
        c.eq(f"membership: change {k} hash = SHA-256(MEMBERSHIP_CHANGE_HASH || change)", h(e["hash"]),
             sha256(MEMBERSHIP_CHANGE_HASH + change))
        c.eq(f"membership: change {k} epoch and time", (e["epoch"], e["issued_at"]), (k, mj["t0"] + 60 * k))
        previous = sha256(MEMBERSHIP_CHANGE_HASH + change)
        got = verdict(verifier, decode_whole(parse_change, h(e["bytes"])), mj["now"], None)
        c.eq(f"membership: change {k} is accepted", "accepted", got)
        prefixes.append(copy.deepcopy(verifier))
    c.eq("membership: the members after the history",
         mj["members"],
         shown_members(verifier))

    for case in mj["invalid"]:
        v = copy.deepcopy(prefixes[case["after"]])
        revocations = None
        if "revocation_list" in case:
            revocations = decode_whole(parse_revocation_list, h(case["revocation_list"]))
            c.true(f"membership: {case['name']}: the revocation list is the clinic's",
                   ed25519_verify(org, SIG_REVOCATION_LIST + revocations["signed"], revocations["signature"]))
        got = verdict(v, decode_whole(parse_change, h(case["change"])), case["now"], revocations)
        c.eq(f"membership: refused: {case['name']}", case["error"], got)
        c.true(f"membership: {case['name']}: the rule names the error", case["error"].startswith(case["rule"]))

    # §4.3 rule 9: claims that take over from revoked agents, who leave with them.
    c.true("membership: takeover cases are published", len(mj.get("takeovers", [])) > 0)
    for case in mj.get("takeovers", []):
        revocations = decode_whole(parse_revocation_list, h(case["revocation_list"]))
        c.true(f"membership: {case['name']}: the revocation list is the clinic's",
               ed25519_verify(org, SIG_REVOCATION_LIST + revocations["signed"], revocations["signature"]))
        change = decode_whole(parse_change, h(case["change"]))
        v = copy.deepcopy(prefixes[case["after"]])
        got = verdict(v, change, case["now"], None)
        c.eq(f"membership: {case['name']}: refused without the list", "ClaimWhileClaimed", got)
        v = copy.deepcopy(prefixes[case["after"]])
        got = verdict(v, change, case["now"], revocations)
        c.eq(f"membership: takeover: {case['name']}", "accepted", got)
        c.eq(f"membership: {case['name']}: the members after it", case["members"],
             shown_members(v))

    # §7.1: the archive policy, rebuilt and signed.
    ap = mj["archive_policy"]
    archive_key = x25519_public(h(ap["archive_secret"]))
    c.eq("membership: archive_key = X25519 public key of archive_secret", h(ap["archive_key"]), archive_key)
    body = bytes([1, 0x71]) + org + (1).to_bytes(8, "big") + archive_key + ap["retention_days"].to_bytes(2, "big")
    policy = body + ed25519_sign(org_secret, b"Hushwire v1 archive policy" + body)
    c.eq("membership: archive policy bytes (140, signed by the organization key)", h(ap["bytes"]), policy)
    c.eq("membership: archive policy length", 140, len(policy))

    # §5.2: whole queue frames, rebuilt from the history's bytes.
    hist = [h(e["bytes"]) for e in mj["history"]]

    def frame(t, body):
        return bytes([1, t]) + (7).to_bytes(4, "big") + body

    ben_fp = h(mj["people"]["ben"]["fingerprint"])
    entry = (conversation + bytes([0x02]) + mj["t0"].to_bytes(8, "big") + (mj["t0"] + 420).to_bytes(8, "big")
             + (8).to_bytes(8, "big"))
    expected = {
        "OpenConversation": frame(0x12, hist[0]),
        "Claim": frame(0x15, hist[1]),
        "HandOff": frame(0x16, bytes([2]) + hist[3] + hist[4] + (1).to_bytes(2, "big") + ben_fp
                         + (1).to_bytes(4, "big") + (16).to_bytes(4, "big") + bytes([0x6e]) * 16),
        "Queue": frame(0x8d, (1).to_bytes(2, "big") + entry),
        "Claimed": frame(0x8e, conversation + (1).to_bytes(8, "big")),
        "AlreadyClaimed": frame(0x8f, conversation + (2).to_bytes(8, "big")),
        "Membership": frame(0x90, bytes([2]) + hist[0] + hist[1]),
        "ArchivePolicy": frame(0x94, bytes([1]) + policy),
    }
    c.eq("membership: the queue frames published", sorted(expected), sorted(f["name"] for f in mj["queue_frames"]))
    for f in mj["queue_frames"]:
        want = expected.get(f["name"], b"")
        c.eq(f"membership: queue frame {f['name']} bytes", h(f["bytes"]), want)
        c.eq(f"membership: queue frame {f['name']} type", f["type"], want[1] if want else None)

    # §7.3: one message sealed to the archive key, and opened with its secret.
    sj = mj["archive_seal"]
    e = h(sj["draws"][0])
    c.eq("membership: archive seal draws one 32-byte secret", [32], [len(h(d)) for d in sj["draws"]])
    ephemeral = x25519_public(e)
    shared = x25519(e, archive_key)
    okm = hkdf(conversation, shared, b"Hushwire v1 archive seal" + ephemeral + archive_key, 56)
    ad = bytes([1, 0x72]) + conversation + (1).to_bytes(8, "big") + ephemeral
    archived = (h(mj["people"][sj["sender"]]["fingerprint"]) + sj["sender_device"].to_bytes(4, "big")
                + sj["epoch"].to_bytes(8, "big") + h(sj["payload"]))
    ct = xchacha20poly1305_encrypt(okm[:32], okm[32:56], ad, archived)
    c.eq("membership: archive envelope = AD || len || XChaCha20-Poly1305(okm key, okm nonce, AD, archived)",
         h(sj["envelope"]), ad + len(ct).to_bytes(4, "big") + ct)
    shared_back = x25519(h(ap["archive_secret"]), ephemeral)
    okm_back = hkdf(conversation, shared_back, b"Hushwire v1 archive seal" + ephemeral + archive_key, 56)
    c.eq("membership: the archive secret opens it",
         archived, xchacha20poly1305_decrypt(okm_back[:32], okm_back[32:56], ad, h(sj["envelope"])[62:]))
    return True


def main():
    here = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

    def load(name):
        with open(os.path.join(here, name), encoding="utf-8") as f:
            return json.load(f)

    c = Checker()
    c.section("self-tests", self_tests, c)
    keys, hs, conv, sj = (load(n) for n in ("keys.json", "handshake.json", "conversation.json", "sealed_session.json"))

    res = c.section("keys", check_keys, c, keys)
    if res is None:
        print("skipped: handshake, conversation, sealed (they need the recomputed keys)")
    else:
        alice, bob = res
        parties = c.section("handshake", check_handshake, c, hs, keys, alice, bob)
        if parties is None:
            print("skipped: conversation, sealed (they need the handshake's session state)")
        else:
            alice_party, bob_party = parties
            if c.section("conversation", check_conversation, c, conv, alice_party, bob_party) is None:
                print("skipped: sealed (it needs alice's state at the end of the conversation)")
            else:
                c.section("sealed", check_sealed, c, sj, alice_party, alice["identity"], bob["identity"])

    # Transcripts recompute what they need from keys.json themselves.
    c.section("transcript", check_transcript, c, load("transcript.json"), keys)
    c.section("audit", check_audit, c, load("audit.json"))
    c.section("xchacha", check_xchacha_intermediates, c, load("sealed_session.json"), load("transcript.json"))
    c.section("fields", check_documented_fields, c, load)
    c.section("payloads", check_payloads, c, load("payloads.json"))
    c.section("relay login", check_relay_login, c, load("relay_login.json"), keys)
    c.section("clinic", check_clinic, c, load("clinic.json"), keys)
    c.section("linking", check_linking, c, load("linking.json"), keys)
    c.section("membership", check_membership, c, load("conversation_membership.json"))

    print(f"{c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
