#!/usr/bin/env python3
"""Independent check of the SecureText protocol test vectors (format version 1).

This is a second implementation of the byte-level rules that shares no code with the Rust
crate: it recomputes every value in v1.json and enrollment-check-v1.json from the JSON alone,
following docs/PROTOCOL.md (and the "# Wire format" sections of shared/src/*.rs). If it passes,
the document plus the vectors are enough for another language to interoperate. The enrollment
check's SPAKE2 is python-spake2 (Brian Warner's, the implementation the Rust `spake2` crate was
ported from), driven through its public API with each vector's randomness.

Requirements (tested with Python 3.11; standard library plus):
    python3 -m pip install cryptography==50.0.2 argon2-cffi==25.1.0 spake2==0.9
(scripts/lib.sh pins the full set CI installs.)

Run from the repository root:
    python3 shared/tests/vectors/verify_vectors.py [path/to/v1.json [path/to/enrollment-check-v1.json]]
(default: the files next to this script). Prints one line per check group and exits non-zero
on any mismatch.
"""

import base64
import datetime
import hashlib
import hmac
import json
import re
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
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.parameters.ed25519 import ParamsEd25519

SEALED_KEY_LABEL = b"securetext/v1/sealed-private-key"
SESSION_BLOB_LABEL = b"securetext/v1/session-blob"
FORMAT_VERSION = 1
CHECK_PASSWORD_LABEL = b"securetext/v1/enrollment-check/password"
CHECK_PATIENT_ID = b"securetext/v1/enrollment-check/patient"
CHECK_AGENT_ID = b"securetext/v1/enrollment-check/agent"
CHECK_PATIENT_CONFIRM = b"securetext/v1/enrollment-check/patient-confirm"
CHECK_AGENT_CONFIRM = b"securetext/v1/enrollment-check/agent-confirm"
CHECK_TRANSCRIPT_LABEL = b"securetext/v1/enrollment-check/transcript"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
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
        print(f"{self.name:<16} {vectors} vectors, {self.checks:>3} checks  {status}")
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


def canonical_date_of_birth(text):
    """Trimmed; exactly YYYY-MM-DD in ASCII digits; a real date from 1900-01-01 to 2100-12-31."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise ValueError(f"not YYYY-MM-DD: {text!r}")
    date = datetime.date(int(text[0:4]), int(text[5:7]), int(text[8:10]))  # checks the calendar
    if not 1900 <= date.year <= 2100:
        raise ValueError(f"year outside 1900 to 2100: {text!r}")
    return text


def canonical_code(text):
    """Trimmed; spaces and '-' removed; upper case; O -> 0, I and L -> 1; 10 Crockford symbols."""
    code = text.strip().replace(" ", "").replace("-", "").upper()
    code = code.replace("O", "0").replace("I", "1").replace("L", "1")
    if len(code) != 10 or any(c not in CROCKFORD for c in code):
        raise ValueError(f"not an enrollment code: {text!r}")
    return code


def check_answer(kind, date_of_birth, code):
    parts = []
    if kind in ("date_of_birth", "date_of_birth_and_code"):
        parts.append("dob:" + canonical_date_of_birth(date_of_birth))
    elif date_of_birth is not None:
        raise ValueError("date of birth given, but not asked")
    if kind in ("code", "date_of_birth_and_code"):
        parts.append("code:" + canonical_code(code))
    elif code is not None:
        raise ValueError("code given, but not asked")
    return "\n".join(parts)


def fixed_entropy(rust_rng_bytes):
    """python-spake2 reads 64 bytes as a big-endian integer and reduces it modulo the group
    order; curve25519-dalek's Scalar::random reads the 64 bytes the generator gives as a
    little-endian integer and reduces it the same way. The same scalar therefore comes from the
    same bytes reversed."""
    calls = []

    def entropy_f(n):
        if n != 64 or calls:
            raise ValueError(f"unexpected request for {n} bytes of entropy")
        calls.append(n)
        return bytes(reversed(rust_rng_bytes))
    return entropy_f


def check_enrollment_check(g, vectors):
    for v in vectors:
        n = g.current = v["name"]
        mid, org = uuid_bytes(v["message_id"]), uuid_bytes(v["organisation_id"])
        pa, pb = v["patient"], v["agent"]

        pws = []
        for who, side in (("patient", pa), ("agent", pb)):
            answer = check_answer(v["kind"], side["date_of_birth"], side["code"])
            g.eq(f"{n}: {who} canonical answer", answer, side["answer"])
            pw = (CHECK_PASSWORD_LABEL + mid + org + struct.pack(">I", len(answer.encode()))
                  + answer.encode())
            g.eq(f"{n}: {who} password input", pw.hex(), side["password_input"])
            pws.append(pw)

        a = SPAKE2_A(pws[0], idA=CHECK_PATIENT_ID, idB=CHECK_AGENT_ID, params=ParamsEd25519,
                     entropy_f=fixed_entropy(hx(pa["rng"])))
        b = SPAKE2_B(pws[1], idA=CHECK_PATIENT_ID, idB=CHECK_AGENT_ID, params=ParamsEd25519,
                     entropy_f=fixed_entropy(hx(pb["rng"])))
        msg_a, msg_b = a.start(), b.start()
        g.eq(f"{n}: patient message", msg_a.hex(), pa["message"])
        g.eq(f"{n}: agent message", msg_b.hex(), pb["message"])
        g.eq(f"{n}: side bytes", (msg_a[0], msg_b[0], len(msg_a), len(msg_b)), (0x41, 0x42, 33, 33))
        keys = {"patient": a.finish(msg_b), "agent": b.finish(msg_a)}

        macs = {}
        for who, side in (("patient", pa), ("agent", pb)):
            key = keys[who]
            g.eq(f"{n}: {who} K", key.hex(), side["key"])
            prk = hkdf_extract(b"", key)
            k_patient = hkdf_expand(prk, CHECK_PATIENT_CONFIRM, 32)
            k_agent = hkdf_expand(prk, CHECK_AGENT_CONFIRM, 32)
            g.eq(f"{n}: {who} k_patient", k_patient.hex(), side["k_patient"])
            g.eq(f"{n}: {who} k_agent", k_agent.hex(), side["k_agent"])
            transcript = (CHECK_TRANSCRIPT_LABEL + mid + org + hx(side["fingerprint"])
                          + msg_a + msg_b)
            g.eq(f"{n}: {who} transcript", transcript.hex(), side["transcript"])
            patient_mac = hmac.new(k_patient, transcript, hashlib.sha256).digest()
            agent_mac = hmac.new(k_agent, transcript, hashlib.sha256).digest()
            sent, expected = ((patient_mac, agent_mac) if who == "patient"
                              else (agent_mac, patient_mac))
            g.eq(f"{n}: {who} confirmation", sent.hex(), side["confirmation"])
            g.eq(f"{n}: {who} expected confirmation", expected.hex(),
                 side["expected_confirmation"])
            macs[who] = (sent, expected)

        g.eq(f"{n}: agent_verified", hmac.compare_digest(macs["patient"][1], macs["agent"][0]),
             v["agent_verified"])
        g.eq(f"{n}: patient_verified", hmac.compare_digest(macs["agent"][1], macs["patient"][0]),
             v["patient_verified"])


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

    check_path = Path(argv[2]) if len(argv) > 2 else path.with_name("enrollment-check-v1.json")
    check_data = json.loads(check_path.read_text(encoding="utf-8"))
    print(f"{check_path}: format_version {check_data['format_version']}")
    if check_data["format_version"] != FORMAT_VERSION:
        ok = False
        print(f"MISMATCH format_version: got {check_data['format_version']}, "
              f"expected {FORMAT_VERSION}")
    data["enrollment_check"] = check_data["enrollment_check"]
    run("enrollment_check", check_enrollment_check)
    print("all vectors verified" if ok else "VECTOR CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
