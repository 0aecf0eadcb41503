// The API the browser client (web/) uses, through the Node build: login answers bound to the
// pinned relay key (checked against the published relay_login vector), relay frames, payloads,
// Argon2id and sealed values.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { hushwire, vector, hex, unhex } = require('./common.js');

const { Account, Session, StorageKey } = hushwire;

test('a login answer to the published challenge verifies only under the pinned relay key', () => {
  const v = vector('relay_login.json');
  // Frame: version 1, type 0x80 Challenge, request id 0, then the 136-byte body of the vector.
  const frame = new Uint8Array([1, 0x80, 0, 0, 0, 0, ...unhex(v.challenge)]);
  const incoming = hushwire.decodeFrame(frame);
  assert.equal(incoming.kind, 'challenge');
  assert.equal(hex(incoming.relayKey), v.relay_key);
  assert.equal(incoming.relayKeyFingerprint, v.relay_key_fingerprint);
  const account = new Account(1, 1_700_000_000);
  const answer = account.answerChallenge(frame, incoming.relayKey, false, 1);
  assert.equal(answer[1], 0x02, 'an Authenticate frame');
  assert.equal(answer.length, 6 + 128 + 4 + 64);
  assert.equal(account.answerChallenge(frame, undefined, true, 1)[1], 0x01, 'a Register frame');
  assert.throws(() => account.answerChallenge(frame, new Uint8Array(32).fill(1), false, 1), /key changed/);
  const forged = frame.slice();
  forged[forged.length - 1] ^= 1;
  assert.throws(() => account.answerChallenge(forged, undefined, true, 1), /not signed/);
});

test('payloads, frames, Argon2id and sealed values', () => {
  const id = crypto.getRandomValues(new Uint8Array(16));
  const padded = hushwire.encodeTextMessage(id, 1234, '<script>x</script>');
  assert.equal(padded.length % 256, 0);
  const p = hushwire.decodePayload(padded);
  assert.equal(p.kind, 'message');
  assert.equal(p.text, '<script>x</script>');
  assert.equal(p.messageId, hex(id));
  assert.deepEqual(hushwire.decodePayload(hushwire.encodeReceipt([hex(id)])).receiptIds, [hex(id)]);

  const alice = new Account(1, 1_700_000_000);
  const bob = new Account(1, 1_700_000_000);
  assert.match(alice.address(), /^[0-9a-f]{64}:1$/);
  assert.equal(alice.uploadPrekeysFrame(9, 5, 5)[1], 0x03);
  assert.equal(alice.oneTimePrekeyCount, 5);
  const send = hushwire.sendFrame(3, bob.address(), new Uint8Array([1, 2]));
  assert.equal(send[1], 0x05);
  assert.equal(hushwire.fetchBundleFrame(4, bob.address())[1], 0x04);
  assert.equal(hushwire.ackFrame(5, new Uint8Array(32))[1], 0x06);
  assert.throws(() => hushwire.fetchBundleFrame(4, 'not an address'));
  const s = Session.initiate(alice, bob.prekeyBundle());
  assert.ok(hushwire.isPrekeyMessage(s.encrypt(padded)));

  const salt = crypto.getRandomValues(new Uint8Array(16));
  const key = hushwire.deriveStorageKey('correct horse battery', salt, 256, 1);
  const same = hushwire.deriveStorageKey('correct horse battery', salt, 256, 1);
  const other = hushwire.deriveStorageKey('wrong horse battery', salt, 256, 1);
  const sealed = key.sealValue(new TextEncoder().encode('kept'));
  assert.equal(new TextDecoder().decode(same.openValue(sealed)), 'kept');
  assert.throws(() => other.openValue(sealed), /different key/);
  assert.throws(() => StorageKey.random().openValue(sealed));
});

test('an archive key file the CLI wrote opens in WebAssembly; a wrong passphrase is refused', () => {
  const fs = require('node:fs');
  const path = require('node:path');
  const fixtures = path.resolve(__dirname, '..', '..', 'hushwire', 'tests', 'fixtures');
  const file = new Uint8Array(fs.readFileSync(path.join(fixtures, 'archive-key-v1.sealed')));
  const policyText = fs.readFileSync(path.join(fixtures, 'archive-policy-v1.txt'), 'utf8').trim();
  const policy = new Uint8Array(Buffer.from(policyText, 'base64url'));
  const key = hushwire.ArchiveKey.openFile(file, 'archive passphrase');
  assert.equal(key.publicKey.length, 32);
  assert.equal(key.matchesPolicy(policy), true);
  key.free();
  assert.throws(
    () => hushwire.ArchiveKey.openFile(file, 'organization passphrase'),
    /^Error: wrong passphrase: the archive key file did not open/,
  );
  assert.throws(
    () => hushwire.ArchiveKey.openFile(new Uint8Array([1, 2, 3]), 'archive passphrase'),
    /not an archive key file/,
  );
});
