// Checks a record's transparency-log proof in the browser, independently of the server's code.
//
// For every element with data-proof-url: fetch (same origin) the JSON
//   {"leaf_data": b64, "leaf_hash": b64, "index": int, "size": int, "hashes": [b64, ...],
//    "checkpoint": "<C2SP signed note>", "verifier_key": "<name>+<hex8 key id>+<b64 key>"}
// and run four steps with WebCrypto (SHA-256, Ed25519):
//   leaf        SHA-256(0x00 || leaf_data) equals leaf_hash
//   inclusion   the RFC 9162 section 2.1.3.2 root from leaf_hash, index, size and hashes
//   checkpoint  the signed checkpoint's size and root equal size and that root
//   signature   the checkpoint carries a valid Ed25519 signature by the verifier key
// Each result goes into the child <li data-step="leaf|inclusion|checkpoint|signature">
// (data-status="ok|failed", text "<the li's own text>: <English detail>"); the element gets
// data-verified="true|false". An <li> may carry data-ok-text (replaces the whole text) and
// data-failed-text (replaces the li's own text before the colon) for other languages.
// A malformed answer fails the step that meets it and every later one.
//
// Formats: c2sp.org/signed-note and c2sp.org/tlog-checkpoint, as in msec/tlog/checkpoint.py;
// hashing as in msec/tlog/merkle.py. The pure functions are exported for Node (tests).
(function () {
  "use strict";

  const STEPS = ["leaf", "inclusion", "checkpoint", "signature"];
  const SIG_PREFIX = "\u2014 "; // EM DASH, then a space
  const ALG_ED25519 = 0x01;
  const HASH_LEN = 32;
  const ED25519_SIG_LEN = 64;
  const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
  const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
  const HEX8 = /^[0-9a-f]{8}$/;

  class ProofFormatError extends Error {}

  // Canonical standard base64 (padded, no whitespace, zero padding bits) to bytes.
  function b64decode(text) {
    if (typeof text !== "string" || !B64.test(text)) {
      throw new ProofFormatError("bad base64");
    }
    const binary = atob(text);
    if (btoa(binary) !== text) throw new ProofFormatError("non-canonical base64");
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const p of parts) {
      out.set(p, offset);
      offset += p.length;
    }
    return out;
  }

  function equalBytes(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  async function sha256(subtle, bytes) {
    return new Uint8Array(await subtle.digest("SHA-256", bytes));
  }

  // RFC 9162 leaf hash: SHA-256(0x00 || data).
  function leafHash(subtle, data) {
    return sha256(subtle, concat(new Uint8Array([0x00]), data));
  }

  // RFC 9162 interior node hash: SHA-256(0x01 || left || right).
  function nodeHash(subtle, left, right) {
    return sha256(subtle, concat(new Uint8Array([0x01]), left, right));
  }

  function checkHash(value, what) {
    if (!(value instanceof Uint8Array) || value.length !== HASH_LEN) {
      throw new ProofFormatError(`${what} is not a ${HASH_LEN}-byte hash`);
    }
    return value;
  }

  // The root an inclusion proof leads to (RFC 9162 section 2.1.3.2, steps 1-5). index and size
  // are non-negative safe integers or BigInts; throws if the proof cannot fit (index, size).
  // BigInt because JavaScript's bitwise operators stop at 32 bits.
  async function rootFromInclusion(subtle, leaf, index, size, proof) {
    checkHash(leaf, "leaf hash");
    proof.forEach((p, i) => checkHash(p, `proof element ${i}`));
    const idx = BigInt(index);
    const n = BigInt(size);
    if (idx < 0n || idx >= n) {
      throw new ProofFormatError(`index ${index} is not in a tree of size ${size}`);
    }
    let fn = idx;
    let sn = n - 1n;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0n) throw new ProofFormatError("inclusion proof is too long");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(subtle, p, r);
        if ((fn & 1n) === 0n) {
          while (!((fn & 1n) === 1n || fn === 0n)) {
            fn >>= 1n;
            sn >>= 1n;
          }
        }
      } else {
        r = await nodeHash(subtle, r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new ProofFormatError("inclusion proof is too short");
    return r;
  }

  function validName(name) {
    return name.length > 0 && !/[\s+]/u.test(name) && !/[\u0000-\u001f]/.test(name);
  }

  // Splits a signed note into its text (what was signed, ending in "\n") and signature lines
  // {name, keyId (uint32), signature (bytes after the key ID)}. Throws if malformed.
  function parseNote(signed) {
    if (typeof signed !== "string") throw new ProofFormatError("checkpoint is not text");
    if (/[\u0000-\u0009\u000b-\u001f]/.test(signed)) {
      throw new ProofFormatError("note has control characters");
    }
    const split = signed.lastIndexOf("\n\n");
    if (split < 0) throw new ProofFormatError("no blank line before signatures");
    const text = signed.slice(0, split + 1);
    const sigs = signed.slice(split + 2);
    if (!sigs || !sigs.endsWith("\n")) {
      throw new ProofFormatError("no signature lines, or last line not terminated");
    }
    const signatures = sigs.slice(0, -1).split("\n").map((line) => {
      if (!line.startsWith(SIG_PREFIX)) {
        throw new ProofFormatError("signature line must start with an em dash and a space");
      }
      const rest = line.slice(SIG_PREFIX.length);
      const space = rest.indexOf(" ");
      const name = space < 0 ? "" : rest.slice(0, space);
      if (space < 0 || !validName(name) || space === rest.length - 1) {
        throw new ProofFormatError("malformed signature line");
      }
      const blob = b64decode(rest.slice(space + 1));
      if (blob.length < 5) throw new ProofFormatError("signature too short");
      const keyId = new DataView(blob.buffer, blob.byteOffset, 4).getUint32(0);
      return { name, keyId, signature: blob.slice(4) };
    });
    return { text, signatures };
  }

  // A checkpoint body "<origin>\n<size>\n<base64 root>\n[extension lines]" to
  // {origin, size (BigInt), root (bytes), extensions}. Throws if malformed.
  function parseCheckpoint(text) {
    if (!text.endsWith("\n")) throw new ProofFormatError("checkpoint must end with a newline");
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3) throw new ProofFormatError("checkpoint needs origin, size and root");
    const [origin, sizeText, rootText, ...extensions] = lines;
    if (!origin) throw new ProofFormatError("checkpoint origin is empty");
    if (sizeText.length > 20 || !DECIMAL.test(sizeText)) {
      throw new ProofFormatError("checkpoint size must be decimal without leading zeros");
    }
    const root = checkHash(b64decode(rootText), "checkpoint root");
    return { origin, size: BigInt(sizeText), root, extensions };
  }

  // The 32-bit key ID of an Ed25519 key: first 4 bytes of SHA-256(name || 0x0A || 0x01 || key).
  async function keyId(subtle, name, publicKey) {
    const prefix = new TextEncoder().encode(`${name}\n`);
    const digest = await sha256(subtle, concat(prefix, new Uint8Array([ALG_ED25519]), publicKey));
    return new DataView(digest.buffer).getUint32(0);
  }

  // "<name>+<hex8 key id>+<base64(0x01 || 32-byte key)>" to {name, keyId, publicKey}. Throws if
  // malformed, not Ed25519, or the key ID does not belong to name and key.
  async function parseVerifierKey(subtle, vkey) {
    if (typeof vkey !== "string") throw new ProofFormatError("verifier key is not text");
    const first = vkey.indexOf("+");
    const second = first < 0 ? -1 : vkey.indexOf("+", first + 1);
    if (second < 0) throw new ProofFormatError("verifier key must be <name>+<hash>+<key>");
    const name = vkey.slice(0, first);
    const hex = vkey.slice(first + 1, second);
    if (!validName(name)) throw new ProofFormatError("invalid key name");
    if (!HEX8.test(hex)) throw new ProofFormatError("key ID must be 8 lower-case hex digits");
    const key = b64decode(vkey.slice(second + 1));
    if (key.length !== 33 || key[0] !== ALG_ED25519) {
      throw new ProofFormatError("unsupported key algorithm or key length");
    }
    const publicKey = key.slice(1);
    const id = await keyId(subtle, name, publicKey);
    if (id !== parseInt(hex, 16)) throw new ProofFormatError("key ID does not match name and key");
    return { name, keyId: id, publicKey };
  }

  async function verifyEd25519(subtle, publicKey, signature, message) {
    if (signature.length !== ED25519_SIG_LEN) return false;
    const key = await subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return subtle.verify({ name: "Ed25519" }, key, signature, message);
  }

  function safeInt(value, what) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new ProofFormatError(`${what} must be a non-negative integer`);
    }
    return value;
  }

  // Runs the four steps on a parsed proof answer. Resolves to
  // {verified, steps: {leaf|inclusion|checkpoint|signature: {ok, message}}}; never rejects.
  async function verifyProof(proof, subtle) {
    const steps = {};
    let step = STEPS[0];
    const pass = (message) => {
      steps[step] = { ok: true, message };
    };
    const fail = (message) => {
      steps[step] = { ok: false, message };
    };
    try {
      if (!proof || typeof proof !== "object") throw new ProofFormatError("answer is not an object");
      const claimed = checkHash(b64decode(proof.leaf_hash), "leaf_hash");
      if (proof.leaf_data === null || proof.leaf_data === undefined) {
        fail("the record's data is not available");
      } else {
        const computed = await leafHash(subtle, b64decode(proof.leaf_data));
        if (equalBytes(computed, claimed)) pass("the leaf hash matches the record's data");
        else fail("the leaf hash does not match the record's data");
      }

      step = "inclusion";
      const index = safeInt(proof.index, "index");
      const size = safeInt(proof.size, "size");
      if (!Array.isArray(proof.hashes)) throw new ProofFormatError("hashes is not a list");
      const path = proof.hashes.map((h, i) => checkHash(b64decode(h), `proof element ${i}`));
      const root = await rootFromInclusion(subtle, claimed, index, size, path);
      pass(`leaf ${index} is included in the tree of ${size} leaves`);

      step = "checkpoint";
      const note = parseNote(proof.checkpoint);
      const checkpoint = parseCheckpoint(note.text);
      if (checkpoint.size !== BigInt(size)) {
        fail(`the checkpoint is for ${checkpoint.size} leaves, the proof for ${size}`);
      } else if (!equalBytes(checkpoint.root, root)) {
        fail("the checkpoint's root differs from the proof's root");
      } else {
        pass(`the checkpoint of ${checkpoint.origin} commits to this root`);
      }

      step = "signature";
      const verifier = await parseVerifierKey(subtle, proof.verifier_key);
      const lines = note.signatures.filter(
        (s) => s.name === verifier.name && s.keyId === verifier.keyId,
      );
      const body = new TextEncoder().encode(note.text);
      if (lines.length === 0) {
        fail(`no signature by ${verifier.name}`);
      } else {
        let valid = true;
        for (const line of lines) {
          valid = valid && (await verifyEd25519(subtle, verifier.publicKey, line.signature, body));
        }
        if (valid) pass(`signed by ${verifier.name}`);
        else fail(`invalid signature by ${verifier.name}`);
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      for (const name of STEPS.slice(STEPS.indexOf(step))) {
        if (!steps[name]) steps[name] = { ok: false, message };
      }
    }
    const verified = STEPS.every((name) => steps[name] && steps[name].ok);
    return { verified, steps };
  }

  // ---------------------------------------------------------------------------------------
  // Browser side
  // ---------------------------------------------------------------------------------------

  // Each step's name as the page wrote it ("Leaf hash…"), kept for every later render.
  const stepNames = new WeakMap();

  function render(root, result) {
    for (const name of STEPS) {
      const item = root.querySelector(`li[data-step="${name}"]`);
      if (!item) continue;
      if (!stepNames.has(item)) {
        stepNames.set(item, item.textContent.trim().replace(/(?:\u2026|\.\.\.)$/, ""));
      }
      const label = stepNames.get(item);
      const { ok, message } = result.steps[name];
      item.dataset.status = ok ? "ok" : "failed";
      if (ok) item.textContent = item.dataset.okText || (label ? `${label}: ${message}` : message);
      else item.textContent = `${item.dataset.failedText || label || name}: ${message}`;
    }
    root.dataset.verified = result.verified ? "true" : "false";
  }

  function failAll(message) {
    const steps = {};
    for (const name of STEPS) steps[name] = { ok: false, message };
    return { verified: false, steps };
  }

  async function check(root) {
    const url = new URL(root.dataset.proofUrl, window.location.href);
    if (url.origin !== window.location.origin) {
      render(root, failAll("the proof URL is not on this site"));
      return;
    }
    const subtle = window.crypto && window.crypto.subtle;
    if (!subtle) {
      render(root, failAll("this browser offers no WebCrypto here (HTTPS needed)"));
      return;
    }
    root.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      render(root, await verifyProof(await response.json(), subtle));
    } catch (err) {
      render(root, failAll(err instanceof Error ? err.message : String(err)));
    } finally {
      root.removeAttribute("aria-busy");
    }
  }

  const started = new WeakSet();

  function scan(scope) {
    const roots = [...scope.querySelectorAll("[data-proof-url]")];
    if (scope.matches && scope.matches("[data-proof-url]")) roots.unshift(scope);
    for (const root of roots) {
      if (started.has(root)) continue;
      started.add(root);
      check(root);
    }
  }

  if (typeof document !== "undefined") {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", () => scan(document));
    } else {
      scan(document);
    }
    // Content swapped in by htmx.
    document.addEventListener("htmx:load", (event) => scan(event.target));
  }

  if (typeof module !== "undefined" && module.exports) {
    module.exports = {
      ProofFormatError,
      b64decode,
      keyId,
      leafHash,
      nodeHash,
      parseCheckpoint,
      parseNote,
      parseVerifierKey,
      rootFromInclusion,
      verifyProof,
    };
  }
})();
