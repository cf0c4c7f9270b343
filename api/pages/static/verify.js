// Verify an access entry in the browser, without trusting the server's own check:
// the C2SP tlog-proof file (entry bytes, index, inclusion proof, signed checkpoint) is
// checked with WebCrypto against the log's verifier key: the Ed25519 signature on the
// checkpoint, then the RFC 6962/9162 inclusion proof of SHA-256(0x00 || entry).
// Progressive enhancement: without this script the server's verdict stands alone.
"use strict";
(function () {
  const section = document.getElementById("browser-check");
  const button = document.getElementById("browser-verify");
  const out = document.getElementById("browser-result");
  if (!section || !button || !out || !window.crypto || !crypto.subtle) return;

  const enc = new TextEncoder();
  const b64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const concat = (...parts) => {
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { all.set(p, at); at += p.length; }
    return all;
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

  async function verifyInclusion(leaf, index, size, proof, root) {
    if (index >= size) return false;
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (sn === 0) return false;
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(concat(Uint8Array.of(1), p, r));
        while (fn !== 0 && fn % 2 === 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      } else {
        r = await sha256(concat(Uint8Array.of(1), r, p));
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(r, root);
  }

  async function verifyNote(note, vkey) {
    const text = vkey.trim();  // <name>+<key id hex>+<base64 key>; base64 may hold "+"
    const first = text.indexOf("+");
    const second = text.indexOf("+", first + 1);
    const name = text.slice(0, first);
    const keyIdHex = text.slice(first + 1, second);
    const keyB64 = text.slice(second + 1);
    const material = b64(keyB64);
    if (material.length !== 33 || material[0] !== 1) throw new Error("not an Ed25519 key");
    const keyId = Uint8Array.from(keyIdHex.match(/../g).map((h) => parseInt(h, 16)));
    const split = note.lastIndexOf("\n\n");
    const body = note.slice(0, split + 1);
    const sigs = note.slice(split + 2).split("\n").filter((l) => l);
    const key = await crypto.subtle.importKey("raw", material.slice(1), { name: "Ed25519" },
      false, ["verify"]);
    for (const line of sigs) {
      const [dash, who, sig64] = line.split(" ");
      if (dash !== "\u2014" || who !== name) continue;
      const raw = b64(sig64);
      if (!equal(raw.slice(0, 4), keyId)) continue;
      if (await crypto.subtle.verify({ name: "Ed25519" }, key, raw.slice(4), enc.encode(body))) {
        const [origin, size, root] = body.slice(0, -1).split("\n");
        if (origin !== name) return null;
        return { size: Number(size), root: b64(root) };
      }
    }
    return null;
  }

  async function run() {
    out.textContent = "…";
    try {
      const [proofText, vkey] = await Promise.all([
        fetch(section.dataset.proof, { credentials: "same-origin" }).then((r) => r.text()),
        fetch(section.dataset.key).then((r) => r.text()),
      ]);
      const at = proofText.indexOf("\n\n");
      const head = proofText.slice(0, at).split("\n");
      const note = proofText.slice(at + 2);
      if (head[0] !== "c2sp.org/tlog-proof@v1") throw new Error("not a tlog-proof");
      const entry = b64(head[1].replace(/^extra /, ""));
      const index = Number(head[2].replace(/^index /, ""));
      const proof = head.slice(3).map(b64);
      const checkpoint = await verifyNote(note, vkey);
      const leaf = await sha256(concat(Uint8Array.of(0), entry));
      const ok = checkpoint !== null &&
        (await verifyInclusion(leaf, index, checkpoint.size, proof, checkpoint.root));
      out.textContent = ok ? section.dataset.ok : section.dataset.fail;
      out.className = ok ? "ok" : "error";
    } catch (error) {
      out.textContent = section.dataset.fail + " (" + error.message + ")";
      out.className = "error";
    }
  }

  button.hidden = false;
  button.addEventListener("click", run);
})();
