#!/usr/bin/env python3
"""Independent check of the SecureText protocol test vectors (format version 1).

This is a second implementation of the byte-level rules that shares no code with the Rust
crate: it recomputes every value in v1.json from the JSON alone, following docs/PROTOCOL.md
(and the "# Wire format" sections of shared/src/*.rs). If it passes, the document plus the
vectors are enough for another language to interoperate.

Requirements (tested with Python 3.11; standard library plus):
    python3 -m pip install cryptography==50.0.2 argon2-cffi==25.1.0

Run from the repository root:
    python3 shared/tests/vectors/verify_vectors.py [path/to/v1.json]
(default: v1.json next to this script). Prints one line per check group and exits non-zero
on any mismatch.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys
import unicodedata
import uuid
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_KEY_LABEL = b"securetext/v1/sealed-private-key"
SESSION_BLOB_LABEL = b"securetext/v1/session-blob"
FORMAT_VERSION = 1
DIRECTIONS = {"to_recipient": 1, "to_organisation": 2}
CONTENT_TYPES = {"text/plain": 1}


# --- encodings and primitives -----------------------------------------------------------------

def hx(text):
    return bytes.fromhex(text)


def b64u_decode(text):
    if "=" in text:
        raise ValueError(f"base64url must be unpadded: {text!r}")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64u_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uuid_bytes(text):
    return uuid.UUID(text).bytes


def hkdf_extract(salt, ikm):  # RFC 5869, section 2.2
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):  # RFC 5869, section 2.3
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def oaep(label):
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=label.encode())


def sealed_box(key, nonce, aad, plaintext):
    """version (1) || nonce (12) || AES-256-GCM ciphertext || tag (16)."""
    return bytes([FORMAT_VERSION]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed_box(key, aad, box):
    if box[0] != FORMAT_VERSION:
        raise ValueError("bad version byte")
    return AESGCM(key).decrypt(box[1:13], box[13:], aad)


def flip_bit(data, index):
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


# --- protocol structures ----------------------------------------------------------------------

def header_bytes(h):
    """The canonical 72-byte envelope header (integers big-endian)."""
    recipient = h["recipient_id"]
    out = (b"STXE" + bytes([h["version"]]) + uuid_bytes(h["message_id"])
           + uuid_bytes(h["organisation_id"])
           + (b"\x01" + uuid_bytes(recipient) if recipient else b"\x00" * 17)
           + struct.pack(">qq", h["created_at"], h["expires_at"])
           + bytes([CONTENT_TYPES[h["content_type"]], DIRECTIONS[h["direction"]]]))
    assert len(out) == 72
    return out


def pad_content(subject, body):
    s, b = subject.encode(), body.encode()
    content = struct.pack(">I", len(s)) + s + struct.pack(">I", len(b)) + b
    total = max(256, 1 << (len(content) + 4 - 1).bit_length())
    if total > 65536:
        raise ValueError("content too long")
    return struct.pack(">I", len(content)) + content + b"\x00" * (total - 4 - len(content))


def unpad_content(padded):
    (n,) = struct.unpack_from(">I", padded, 0)
    content, rest = padded[4:4 + n], padded[4 + n:]
    if rest.strip(b"\x00"):
        raise ValueError("non-zero padding")
    (ls,) = struct.unpack_from(">I", content, 0)
    subject = content[4:4 + ls]
    (lb,) = struct.unpack_from(">I", content, 4 + ls)
    body = content[8 + ls:8 + ls + lb]
    if 8 + ls + lb != n:
        raise ValueError("trailing bytes in content")
    return subject.decode(), body.decode()


# --- checking ---------------------------------------------------------------------------------

class Group:
    """Counts checks of one group; a failed check is recorded with a message, not raised."""

    def __init__(self, name):
        self.name, self.checks, self.failures, self.current = name, 0, [], "?"

    def eq(self, what, actual, expected):
        self.checks += 1
        if actual == expected:
            return
        if isinstance(actual, str) and isinstance(expected, str) and len(expected) > 72:
            at = next((i for i, (a, e) in enumerate(zip(actual, expected)) if a != e),
                      min(len(actual), len(expected)))
            self.failures.append(f"{what}: differs from character {at} (lengths "
                                 f"{len(actual)}/{len(expected)}): got ...{actual[at:at + 24]}..., "
                                 f"expected ...{expected[at:at + 24]}...")
        else:
            self.failures.append(f"{what}: got {actual!r}, expected {expected!r}")

    def raises(self, what, func, *errors):
        self.checks += 1
        try:
            func()
        except errors:
            return
        self.failures.append(f"{what}: expected failure, but it succeeded")

    def report(self, vectors):
        status = "OK" if not self.failures else f"FAILED ({len(self.failures)})"
        print(f"{self.name:<13} {vectors} vectors, {self.checks:>3} checks  {status}")
        for failure in self.failures:
            print(f"    MISMATCH {failure}")
        return not self.failures


def check_keys(g, vectors):
    keys = {}
    for v in vectors:
        n = g.current = v["name"]
        private = serialization.load_der_private_key(hx(v["private_key_pkcs8"]), password=None)
        spki = private.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        g.eq(f"{n}: SPKI derived from PKCS#8", spki.hex(), v["public_key_spki"])
        g.eq(f"{n}: fingerprint", hashlib.sha256(hx(v["public_key_spki"])).hexdigest(),
             v["fingerprint"])
        numbers = private.public_key().public_numbers()
        g.eq(f"{n}: modulus bits", numbers.n.bit_length(), 3072)
        g.eq(f"{n}: public exponent", numbers.e, 65537)
        keys[n] = (private, v)
    return keys


def check_kdf(g, vectors):
    sealing = {}
    for v in vectors:
        n = g.current = v["name"]
        p = v["params"]
        password = unicodedata.normalize("NFC", v["password"]).encode()
        g.eq(f"{n}: NFC password", password.hex(), v["password_nfc"])
        g.eq(f"{n}: algorithm", p["algorithm"], "argon2id-v19")
        master = hash_secret_raw(password, hx(v["salt"]), time_cost=p["iterations"],
                                 memory_cost=p["memory_kib"], parallelism=p["parallelism"],
                                 hash_len=32, type=Type.ID, version=19)
        g.eq(f"{n}: master", master.hex(), v["master"])
        prk = hkdf_extract(b"securetext/v1/password-keys", master)
        seal_key = hkdf_expand(prk, b"securetext/v1/seal-key", 32)
        auth_key = hkdf_expand(prk, b"securetext/v1/auth-key", 32)
        g.eq(f"{n}: sealing key", seal_key.hex(), v["sealing_key"])
        g.eq(f"{n}: auth key", auth_key.hex(), v["auth_key"])
        verifier = hashlib.sha256(b"securetext/v1/verifier" + auth_key).hexdigest()
        g.eq(f"{n}: verifier", verifier, v["verifier"])
        sealing[n] = seal_key
    return sealing


def kdf_params_bytes(p):
    # KdfParams::to_bytes: 0x01 (Argon2id v0x13) || u32be(m) || u32be(t) || u32be(p)
    assert p["algorithm"] == "argon2id-v19"
    return b"\x01" + b"".join(p[k].to_bytes(4, "big")
                               for k in ("memory_kib", "iterations", "parallelism"))


def check_key_bundle(g, vectors, keys, sealing, kdf_vectors):
    for v in vectors:
        n = g.current = v["name"]
        key = sealing[v["kdf"]]
        pkcs8 = hx(keys[v["key"]][1]["private_key_pkcs8"])
        kdf = kdf_vectors[v["kdf"]]
        aad = SEALED_KEY_LABEL + b"\x02" + uuid_bytes(v["recipient_id"]) + hx(kdf["salt"]) \
            + kdf_params_bytes(kdf["params"])
        g.eq(f"{n}: aad", aad.hex(), v["aad"])
        sealed = sealed_box(key, hx(v["nonce"]), aad, pkcs8)
        g.eq(f"{n}: sealed_private_key", sealed.hex(), v["sealed_private_key"])
        given = hx(v["sealed_private_key"])
        g.eq(f"{n}: unseal", open_sealed_box(key, aad, given), pkcs8)
        g.raises(f"{n}: unseal with a flipped ciphertext bit",
                 lambda: open_sealed_box(key, aad, flip_bit(given, 20)), InvalidTag)
        other = SEALED_KEY_LABEL + b"\x02" + b"\x00" * 16 + aad[-29:]
        g.raises(f"{n}: unseal for another recipient",
                 lambda: open_sealed_box(key, other, given), InvalidTag)
        cheaper = aad[:-8] + (1).to_bytes(4, "big") + aad[-4:]
        g.raises(f"{n}: unseal beside other KDF parameters",
                 lambda: open_sealed_box(key, cheaper, given), InvalidTag)


def unwrap(keys, name, wrap, label):
    private, kv = keys[name]
    if wrap["key_fingerprint"] != kv["fingerprint"]:
        raise ValueError(f"wrap fingerprint {wrap['key_fingerprint']} is not key {name!r}")
    return private.decrypt(b64u_decode(wrap["wrapped_key"]), oaep(label))


def check_envelope(g, vectors, keys):
    for v in vectors:
        n = g.current = v["name"]
        hj, ej = v["header_json"], v["envelope_json"]
        header = header_bytes(hj)
        g.eq(f"{n}: header", header.hex(), v["header"])
        g.eq(f"{n}: OAEP label", v["oaep_label"],
             "securetext/v1/content-key/" + hj["message_id"])
        padded = pad_content(v["subject"], v["body"])
        g.eq(f"{n}: padded", padded.hex(), v["padded"])
        content_key, nonce = hx(v["content_key"]), hx(v["nonce"])
        ciphertext = AESGCM(content_key).encrypt(nonce, padded, header)
        g.eq(f"{n}: ciphertext", ciphertext.hex(), v["ciphertext"])

        g.eq(f"{n}: envelope_json header", ej["header"], hj)
        g.eq(f"{n}: envelope_json nonce", b64u_decode(ej["nonce"]).hex(), v["nonce"])
        g.eq(f"{n}: envelope_json ciphertext", b64u_decode(ej["ciphertext"]).hex(),
             v["ciphertext"])
        roles = {w["role"]: w for w in ej["wraps"]}
        g.eq(f"{n}: wrap roles", sorted(w["role"] for w in ej["wraps"]),
             ["organisation"] + (["recipient"] if v["recipient_key"] else []))
        g.eq(f"{n}: recipient flag", hj["recipient_id"] is not None, bool(v["recipient_key"]))
        holders = [("organisation", v["organisation_key"]), ("recipient", v["recipient_key"])]
        for role, key_name in holders:
            if key_name is None:
                continue
            key = unwrap(keys, key_name, roles[role], v["oaep_label"])
            g.eq(f"{n}: {role} wrap -> content key", key.hex(), v["content_key"])
            opened = AESGCM(key).decrypt(nonce, b64u_decode(ej["ciphertext"]), header)
            g.eq(f"{n}: {role} opens", unpad_content(opened), (v["subject"], v["body"]))

        org_private = keys[v["organisation_key"]][0]
        org_wrap = b64u_decode(roles["organisation"]["wrapped_key"])
        g.raises(f"{n}: flipped wrap bit", lambda: org_private.decrypt(
            flip_bit(org_wrap, 100), oaep(v["oaep_label"])), ValueError)
        g.raises(f"{n}: wrong OAEP label", lambda: org_private.decrypt(
            org_wrap, oaep(v["oaep_label"] + "x")), ValueError)
        g.raises(f"{n}: flipped ciphertext bit", lambda: AESGCM(content_key).decrypt(
            nonce, flip_bit(ciphertext, 0), header), InvalidTag)
        g.raises(f"{n}: altered header (direction)", lambda: AESGCM(content_key).decrypt(
            nonce, ciphertext, header[:71] + b"\x02"), InvalidTag)


def check_rewrap(g, vectors, keys, envelopes):
    for v in vectors:
        n = g.current = v["name"]
        src = envelopes[v["envelope"]]
        wrap = v["recipient_wrap_json"]
        g.eq(f"{n}: role", wrap["role"], "recipient")
        g.eq(f"{n}: source is first contact", src["header_json"]["recipient_id"], None)
        key = unwrap(keys, v["recipient_key"], wrap, src["oaep_label"])
        g.eq(f"{n}: content key", key.hex(), src["content_key"])
        ej = src["envelope_json"]
        padded = AESGCM(key).decrypt(b64u_decode(ej["nonce"]), b64u_decode(ej["ciphertext"]),
                                     header_bytes(ej["header"]))
        g.eq(f"{n}: body", unpad_content(padded)[1], src["body"])


def check_session_blob(g, vectors, keys):
    for v in vectors:
        n = g.current = v["name"]
        session_id = uuid_bytes(v["session_id"])
        ikm = hx(v["device_half"]) + hx(v["relay_half"])
        session_key = hkdf_expand(hkdf_extract(session_id, ikm), b"securetext/v1/session-key", 32)
        g.eq(f"{n}: session key", session_key.hex(), v["session_key"])
        aad = SESSION_BLOB_LABEL + b"\x01" + session_id + uuid_bytes(v["recipient_id"])
        g.eq(f"{n}: aad", aad.hex(), v["aad"])
        pkcs8 = hx(keys[v["key"]][1]["private_key_pkcs8"])
        g.eq(f"{n}: blob", sealed_box(session_key, hx(v["nonce"]), aad, pkcs8).hex(), v["blob"])
        blob = hx(v["blob"])
        g.eq(f"{n}: open", open_sealed_box(session_key, aad, blob), pkcs8)
        g.raises(f"{n}: flipped blob bit",
                 lambda: open_sealed_box(session_key, aad, flip_bit(blob, len(blob) - 1)),
                 InvalidTag)
        other_key = hkdf_expand(hkdf_extract(session_id, hx(v["device_half"]) + bytes(32)),
                                b"securetext/v1/session-key", 32)
        g.raises(f"{n}: wrong relay half", lambda: open_sealed_box(other_key, aad, blob),
                 InvalidTag)


def check_token_hash(g, vectors):
    for v in vectors:
        g.current = kind = v["kind"]
        token = hx(v["token"])
        g.eq(f"{kind}: token length", len(token), 32)
        g.eq(f"{kind}: base64url", b64u_encode(token), v["token_base64url"])
        g.eq(f"{kind}: base64url length", len(v["token_base64url"]), 43)
        digest = hashlib.sha256(b"securetext/v1/token/" + kind.encode() + b"\x00" + token)
        g.eq(f"{kind}: hash", digest.hexdigest(), v["hash"])


def main(argv):
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("v1.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    print(f"{path}: format_version {data['format_version']}")
    ok = data["format_version"] == FORMAT_VERSION
    if not ok:
        print(f"MISMATCH format_version: got {data['format_version']}, expected {FORMAT_VERSION}")

    def run(name, check, *args):
        nonlocal ok
        g, result = Group(name), None
        try:
            result = check(g, data[name], *args)
        except InvalidTag:
            g.failures.append(f"{g.current}: aborted: AES-GCM authentication failed")
        except Exception as error:  # a vector that cannot even be processed is a failure
            g.failures.append(f"{g.current}: aborted: {type(error).__name__}: {error}")
        ok = g.report(len(data[name])) and ok
        return result

    keys = run("keys", check_keys) or {}
    sealing = run("kdf", check_kdf) or {}
    run("key_bundle", check_key_bundle, keys, sealing, {k["name"]: k for k in data["kdf"]})
    run("envelope", check_envelope, keys)
    run("rewrap", check_rewrap, keys, {e["name"]: e for e in data["envelope"]})
    run("session_blob", check_session_blob, keys)
    run("token_hash", check_token_hash)
    print("all vectors verified" if ok else "VECTOR CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
