// The page side of the browser benchmark (tests/src/bin/browser-bench.rs drives it through
// WebDriver). Each `bench.*` call runs one repetition and times it inside the page with
// performance.now(), so WebDriver round trips are not in the figures.
import init, * as ours from "./pkg/bench_wasm.js";

const subtle = crypto.subtle;
const enc = new TextEncoder();
const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
const equal = (a, b) => hex(a) === hex(b);
const random = (n) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
};
const time = async (f) => {
  const start = performance.now();
  const out = await f();
  return { ms: performance.now() - start, out };
};
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const RSA_OAEP = { name: "RSA-OAEP", modulusLength: 3072, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" };

// State shared by the repetitions of one measurement.
const state = {};

window.bench = {
  ready: init().then(() => { document.getElementById("status").textContent = "ready"; return true; }),

  // --- Argon2id --------------------------------------------------------------------------
  // Ours: shared::kdf::derive_password_keys (Argon2id + HKDF), what the viewer runs.
  async argon2Ours({ password, salt, m, t, p }) {
    const s = Uint8Array.from(salt);
    const { ms, out } = await time(() => ours.derive_verifier(password, s, m, t, p));
    return { ms, verifier: hex(out) };
  },
  async argon2HashWasm({ password, salt, m, t, p, len }) {
    const s = Uint8Array.from(salt);
    const { ms, out } = await time(() => hashwasm.argon2id({
      password: enc.encode(password), salt: s, parallelism: p, iterations: t, memorySize: m,
      hashLength: len, outputType: "binary",
    }));
    return { ms, raw: hex(out) };
  },
  // The equality checks (untimed): our raw Argon2id output (the call shared::kdf makes) and
  // the verifier shared::kdf derives, against hash-wasm's output and the verifier computed
  // from it here (HKDF-SHA256 and SHA-256 in WebCrypto, labels of docs/PROTOCOL.md).
  async argon2Check({ password, salt, m, t, p, len, hashWasmRaw }) {
    const s = Uint8Array.from(salt);
    const raw = hex(ours.argon2id_raw(enc.encode(password), s, m, t, p, len));
    const ikm = await subtle.importKey("raw", Uint8Array.from(hashWasmRaw.match(/../g).map((h) => parseInt(h, 16))), "HKDF", false, ["deriveBits"]);
    const auth = new Uint8Array(await subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: enc.encode("securetext/v1/password-keys"), info: enc.encode("securetext/v1/auth-key") },
      ikm, 256));
    const verifier = hex(await subtle.digest("SHA-256", concat(enc.encode("securetext/v1/verifier"), auth)));
    return { raw, verifierFromHashWasm: verifier };
  },

  // --- RSA-OAEP-3072 (SHA-256) -----------------------------------------------------------
  // One key pair and one wrapped 32-byte content key, as an envelope carries it.
  async rsaSetup() {
    const pair = await subtle.generateKey(RSA_OAEP, true, ["encrypt", "decrypt"]);
    state.der = new Uint8Array(await subtle.exportKey("pkcs8", pair.privateKey));
    state.label = enc.encode("securetext/v1/content-key/5f0c4a5e-9d7b-4c1e-8f3a-2b6d7e8f9a01");
    state.contentKey = random(32);
    state.wrapped = new Uint8Array(await subtle.encrypt({ name: "RSA-OAEP", label: state.label }, pair.publicKey, state.contentKey));
    // What the viewer holds while unlocked: a non-extractable decrypt-only import.
    state.webKey = await subtle.importKey("pkcs8", state.der, { name: "RSA-OAEP", hash: "SHA-256" }, false, ["decrypt"]);
    state.rsaKey = new ours.RsaKey(state.der);
    const a = new Uint8Array(await subtle.decrypt({ name: "RSA-OAEP", label: state.label }, state.webKey, state.wrapped));
    const b = state.rsaKey.decrypt(state.wrapped, state.label);
    return { webcryptoOk: equal(a, state.contentKey), rsaCrateOk: equal(b, state.contentKey) };
  },
  async rsaUnwrapWebCrypto() {
    const { ms, out } = await time(() => subtle.decrypt({ name: "RSA-OAEP", label: state.label }, state.webKey, state.wrapped));
    return { ms, ok: equal(out, state.contentKey) };
  },
  async rsaUnwrapRsaCrate() {
    const { ms, out } = await time(() => state.rsaKey.decrypt(state.wrapped, state.label));
    return { ms, ok: equal(out, state.contentKey) };
  },
  // Once per unlock the viewer checks the unsealed PKCS#8 (shared::keys, rsa crate) and
  // imports it into WebCrypto, non-extractable.
  async rsaCheckPkcs8() {
    const { ms } = await time(() => ours.rsa_check_pkcs8(state.der));
    return { ms };
  },
  async rsaImportWebCrypto() {
    const { ms } = await time(() => subtle.importKey("pkcs8", state.der, { name: "RSA-OAEP", hash: "SHA-256" }, false, ["decrypt"]));
    return { ms };
  },
  // The viewer's key generation (viewer/src/keygen.rs): WebCrypto generateKey, exportKey
  // pkcs8, then shared's PKCS#8 check; `generate` alone is also returned.
  async rsaKeygenWebCrypto() {
    const start = performance.now();
    const pair = await subtle.generateKey(RSA_OAEP, true, ["encrypt", "decrypt"]);
    const generated = performance.now();
    const der = new Uint8Array(await subtle.exportKey("pkcs8", pair.privateKey));
    ours.rsa_check_pkcs8(der);
    return { ms: performance.now() - start, generate: generated - start };
  },
  async rsaKeygenRsaCrate() {
    const { ms, out } = await time(() => ours.rsa_generate_pkcs8());
    return { ms, bytes: out.length };
  },

  // --- AES-256-GCM of 1 MiB ----------------------------------------------------------------
  async aesSetup({ size }) {
    state.aesKey = random(32);
    state.nonce = random(12);
    state.aad = random(64);
    state.plaintext = random(size);
    state.webAes = await subtle.importKey("raw", state.aesKey, "AES-GCM", false, ["encrypt", "decrypt"]);
    const a = ours.aes_gcm_seal(state.aesKey, state.nonce, state.aad, state.plaintext);
    const b = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: state.nonce, additionalData: state.aad }, state.webAes, state.plaintext));
    state.sealed = a;
    const back = ours.aes_gcm_open(state.aesKey, state.nonce, state.aad, b);
    return { sameCiphertext: equal(a, b), roundTrip: equal(back, state.plaintext), bytes: a.length };
  },
  async aesSealOurs() {
    const { ms } = await time(() => ours.aes_gcm_seal(state.aesKey, state.nonce, state.aad, state.plaintext));
    return { ms };
  },
  async aesOpenOurs() {
    const { ms, out } = await time(() => ours.aes_gcm_open(state.aesKey, state.nonce, state.aad, state.sealed));
    return { ms, ok: out.length === state.plaintext.length };
  },
  async aesSealWebCrypto() {
    const { ms } = await time(() => subtle.encrypt({ name: "AES-GCM", iv: state.nonce, additionalData: state.aad }, state.webAes, state.plaintext));
    return { ms };
  },
  async aesOpenWebCrypto() {
    const { ms, out } = await time(() => subtle.decrypt({ name: "AES-GCM", iv: state.nonce, additionalData: state.aad }, state.webAes, state.sealed));
    return { ms, ok: out.byteLength === state.plaintext.length };
  },
};
