// Two devices in JavaScript over the WebAssembly build, with the platform's randomness
// (crypto.getRandomValues): a session, messages both ways and out of order, gaps, sealing and
// unsealing accounts and sessions, and refusals (tampered, replayed, wrong key) that throw the
// core's error text and leave the session working.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { hushwire, hex, utf8, text } = require('./common.js');

const { Account, Session, StorageKey } = hushwire;
const now = () => Math.floor(Date.now() / 1000);
const randomKey = () => new StorageKey(crypto.getRandomValues(new Uint8Array(32)));

/** Asserts that `f` throws a JS Error whose message matches `pattern`. */
function throwsWith(f, pattern) {
  assert.throws(f, (e) => {
    assert.ok(e instanceof Error, `expected an Error, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test('a conversation between two accounts made in JavaScript', () => {
  const alice = new Account(1, now());
  const bob = new Account(2, now());
  assert.notEqual(alice.fingerprint(), bob.fingerprint());
  assert.match(alice.fingerprint(), /^[0-9a-f]{64}$/);
  assert.equal(alice.identityKey().length, 128);
  assert.equal(bob.generateOneTimePrekeys(3), 3);
  assert.equal(bob.generateOneTimeKemPrekeys(2), 2);

  const toBob = Session.initiate(alice, bob.prekeyBundle());
  assert.equal(toBob.awaitingReply, true);
  // Three prekey messages before Bob answers; the third arrives first.
  const a = ['first', 'second', 'third'].map((m) => toBob.encrypt(utf8(m)));
  const accepted = bob.accept(a[2]);
  assert.equal(text(accepted.plaintext), 'third');
  const fromAlice = accepted.takeSession();
  throwsWith(() => accepted.takeSession(), /already taken/);
  assert.equal(bob.oneTimePrekeyCount, 2, 'one X25519 one-time prekey used');
  assert.equal(bob.oneTimeKemPrekeyCount, 1, 'one ML-KEM one-time prekey used');
  assert.deepEqual(
    fromAlice.missingMessages().map((g) => Array.from(g.missing)),
    [[0, 1]],
  );
  assert.equal(text(fromAlice.decrypt(a[0])), 'first');
  assert.equal(text(fromAlice.decrypt(a[1])), 'second');
  assert.deepEqual(fromAlice.missingMessages(), []);

  assert.equal(toBob.safetyNumber(), fromAlice.safetyNumber());
  assert.match(toBob.safetyNumber(), /^\d{60}$/);
  assert.equal(toBob.remoteFingerprint(), bob.fingerprint());
  assert.equal(fromAlice.remoteFingerprint(), alice.fingerprint());
  assert.equal(hex(fromAlice.remoteIdentityKey()), hex(alice.identityKey()));

  // Bob answers twice; Alice reads them in reverse order.
  const b = ['one', 'two'].map((m) => fromAlice.encrypt(utf8(m)));
  assert.equal(text(toBob.decrypt(b[1])), 'two');
  assert.equal(toBob.awaitingReply, false);
  assert.equal(text(toBob.decrypt(b[0])), 'one');

  // Several turns both ways, each delivered late by one.
  let pending = null;
  for (let i = 0; i < 6; i++) {
    const [from, to] = i % 2 === 0 ? [toBob, fromAlice] : [fromAlice, toBob];
    const x = from.encrypt(utf8(`turn ${i}a`));
    const y = from.encrypt(utf8(`turn ${i}b`));
    assert.equal(text(to.decrypt(y)), `turn ${i}b`);
    assert.equal(to.missingMessages().length, 1);
    assert.equal(text(to.decrypt(x)), `turn ${i}a`);
    assert.deepEqual(to.missingMessages(), []);
    pending = x;
  }

  // A replay and a tampered message throw; the session goes on working after both.
  throwsWith(() => toBob.decrypt(pending), /already decrypted/);
  const good = fromAlice.encrypt(utf8('after the attack'));
  for (const at of [2, 30, good.length - 1]) {
    const tampered = Uint8Array.from(good);
    tampered[at] ^= 0x40;
    throwsWith(() => toBob.decrypt(tampered), /failed authentication/);
  }
  throwsWith(() => toBob.decrypt(good.subarray(0, 20)), /^malformed message/);
  assert.equal(text(toBob.decrypt(good)), 'after the attack');

  // The first prekey message again: its one-time prekey is used up.
  throwsWith(() => bob.accept(a[0]), /already used/);

  // Empty and large messages; the core's limit is refused.
  assert.equal(toBob.decrypt(fromAlice.encrypt(new Uint8Array(0))).length, 0);
  const big = crypto.getRandomValues(new Uint8Array(65536));
  assert.deepEqual(fromAlice.decrypt(toBob.encrypt(big)), big);
  throwsWith(() => toBob.encrypt(new Uint8Array(65537)), /65537/);

  for (const o of [alice, bob, toBob, fromAlice, accepted]) o.free();
});

test('sealing and unsealing accounts and sessions', () => {
  const key = randomKey();
  const alice = new Account(1, now());
  const bob = new Account(2, now());
  bob.generateOneTimePrekeys(1);
  const toBob = Session.initiate(alice, bob.prekeyBundle());
  const hello = toBob.encrypt(utf8('hello'));

  // Bob's account survives a reload and accepts the session with its one-time prekey.
  const sealedBob = bob.seal(key);
  assert.ok(!hex(sealedBob).includes(hex(bob.identityKey()).slice(0, 64)), 'sealed, not plain');
  const bob2 = Account.unseal(sealedBob, key);
  assert.equal(bob2.fingerprint(), bob.fingerprint());
  assert.equal(bob2.deviceId, 2);
  assert.equal(bob2.oneTimePrekeyCount, 1);
  const fromAlice = bob2.accept(hello).takeSession();
  assert.equal(bob2.oneTimePrekeyCount, 0);

  // Each seal draws a fresh nonce.
  assert.notEqual(hex(toBob.seal(key)), hex(toBob.seal(key)));

  // Both sessions survive a reload and go on from where they were.
  const toBob2 = Session.unseal(toBob.seal(key), key);
  const fromAlice2 = Session.unseal(fromAlice.seal(key), key);
  assert.equal(text(toBob2.decrypt(fromAlice2.encrypt(utf8('reply')))), 'reply');
  assert.equal(text(fromAlice2.decrypt(toBob2.encrypt(utf8('again')))), 'again');
  assert.equal(toBob2.safetyNumber(), toBob.safetyNumber());

  // Refusals: another key, altered bytes, the wrong kind of state, a bad key length.
  const sealed = toBob2.seal(key);
  throwsWith(() => Session.unseal(sealed, randomKey()), /sealed under a different key/);
  const altered = Uint8Array.from(sealed);
  altered[altered.length - 1] ^= 1;
  throwsWith(() => Session.unseal(altered, key), /failed authentication/);
  throwsWith(() => Account.unseal(sealed, key), /of kind/);
  throwsWith(() => Session.unseal(new Uint8Array(3), key), /truncated/);
  throwsWith(() => new StorageKey(new Uint8Array(16)), /32 bytes, not 16/);
  throwsWith(() => new Account(1, 1.5), /whole number/);
  throwsWith(() => new Account(1, -1), /whole number/);
});

test('secrets stay inside WebAssembly objects', () => {
  const alice = new Account(1, now());
  const key = randomKey();
  const session = Session.initiate(alice, new Account(2, now()).prekeyBundle());
  // The JS objects are handles: no own fields but the pointer, nothing to print.
  for (const o of [alice, key, session]) {
    assert.deepEqual(Object.keys(o).filter((k) => k !== '__wbg_ptr'), []);
    assert.ok(!JSON.stringify(o).match(/[0-9a-f]{32}/));
  }
  // The whole method surface, so that nothing returning a secret is added unnoticed.
  const methods = (cls) =>
    Object.getOwnPropertyNames(cls.prototype)
      .filter((n) => !['constructor', 'free'].includes(n) && !n.startsWith('__'))
      .sort();
  // answerChallenge returns a signed login frame and uploadPrekeysFrame public prekeys
  // (web/, issue 16 part 2); publishDeviceListFrame a signed device list and
  // openConversationFrame a signed membership change (docs/conversations.md §4.2); the agent
  // console's certificateRequest the public identity key, addColleagueFrame, claimFrame and
  // handOffFrame signed changes (handOffFrameWithNotes with the note envelopes, already
  // encrypted by Session.encrypt), updateCertificateFrame the (public) certificate: none carries
  // a secret.
  assert.deepEqual(methods(Account), [
    'accept', 'addColleagueFrame', 'address', 'answerChallenge', 'certificateRequest', 'claimFrame', 'deviceId',
    'fingerprint', 'generateOneTimeKemPrekeys', 'generateOneTimePrekeys', 'handOffFrame',
    'handOffFrameWithNotes', 'identityKey', 'joinReadOnlyFrame', 'leaveReadOnlyFrame', 'oneTimeKemPrekeyCount',
    'oneTimePrekeyCount', 'openConversationFrame', 'prekeyBundle', 'publishDeviceListFrame', 'seal', 'updateCertificateFrame',
    'uploadPrekeysFrame',
  ]);
  assert.deepEqual(methods(Session), [
    'awaitingReply', 'decrypt', 'encrypt', 'missingMessages', 'remoteFingerprint',
    'remoteIdentityKey', 'safetyNumber', 'seal',
  ]);
  // Sealing and opening the caller's own values; the key itself never comes out.
  assert.deepEqual(methods(StorageKey), ['openValue', 'sealValue']);
  // A freed object refuses to be used rather than reading freed memory.
  alice.free();
  assert.throws(() => alice.fingerprint());
});

test('the browser build (target/wasm/web) loads and talks to the Node build', async () => {
  const fs = require('node:fs');
  const path = require('node:path');
  const { pathToFileURL } = require('node:url');
  const root = path.join(__dirname, '..', '..', '..');
  const webDir = process.env.HUSHWIRE_WASM_WEB_DIR || path.join(root, 'target', 'wasm', 'web');
  const web = await import(pathToFileURL(path.join(webDir, 'hushwire_wasm.js')).href);
  // A browser passes a URL to `init`; here the module's bytes are given directly.
  web.initSync({ module: fs.readFileSync(path.join(webDir, 'hushwire_wasm_bg.wasm')) });

  const inBrowser = new web.Account(1, now());
  const inNode = new Account(2, now());
  const toNode = web.Session.initiate(inBrowser, inNode.prekeyBundle());
  const fromBrowser = inNode.accept(toNode.encrypt(utf8('from the web build'))).takeSession();
  const reply = fromBrowser.encrypt(utf8('from the node build'));
  assert.equal(text(toNode.decrypt(reply)), 'from the node build');
  assert.equal(toNode.safetyNumber(), fromBrowser.safetyNumber());
});
