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

// docs/conversations.md §7.3: the supervisor's archive reader (`ArchiveReading`), on the published
// vectors: the clinic, the conversation's nine verified changes and the vectors' archive policy,
// whose key js-tests/fixtures/archive-key-vector.sealed holds (sealed as `hushwire org
// archive-policy` seals it). Envelopes are sealed by `Clinic.sealArchiveEnvelope`, as members seal
// them (once per copy, filed with `putArchiveEnvelopeFrame`). Hostile envelopes are errors, never panics, and keep nothing.
test('archive envelopes open and are checked against the membership in WebAssembly; hostile ones are refused', () => {
  const fs = require('node:fs');
  const path = require('node:path');
  const m = vector('conversation_membership.json');
  const clinic = hushwire.Clinic.parse(vector('clinic.json').link_text);
  const conversation = unhex(m.conversation_id);
  const membership = new hushwire.Membership(clinic, conversation);
  for (const change of m.history) membership.apply(unhex(change.bytes), m.now);
  assert.equal(membership.nextEpoch, 9);
  const file = new Uint8Array(fs.readFileSync(path.join(__dirname, 'fixtures', 'archive-key-vector.sealed')));
  const key = hushwire.ArchiveKey.openFile(file, 'archive passphrase');
  const policy = unhex(m.archive_policy.bytes);
  assert.equal(hex(key.publicKey), m.archive_policy.archive_key);
  assert.equal(key.matchesPolicy(policy), true);

  const id0 = (b) => new Uint8Array(16).fill(b);
  const ada = `${m.people.ada.fingerprint}:1`;
  const patient = `${m.people.patient.fingerprint}:2`;
  // A member's archive copy, sealed once; the PutArchive frame (version, type, request id) then
  // carries those very bytes on every attempt.
  const sealed = (sender, epoch, payload) => clinic.sealArchiveEnvelope(policy, conversation, sender, epoch, payload);
  const once = sealed(patient, 9, hushwire.encodeConversationMessage(conversation, 9, id0(9), 900, 'sealed once'));
  assert.notDeepEqual(once, sealed(patient, 9, hushwire.encodeConversationMessage(conversation, 9, id0(9), 900, 'sealed once')));
  for (const requestId of [1, 2]) {
    const put = hushwire.putArchiveEnvelopeFrame(requestId, once);
    assert.deepEqual([...put.slice(0, 2)], [...hushwire.putArchiveEnvelopeFrame(9, once).slice(0, 2)]);
    assert.deepEqual(put.slice(6), once);
  }
  assert.throws(() => hushwire.putArchiveEnvelopeFrame(1, once.slice(0, 30)), /not an archive envelope/);
  const id = (b) => new Uint8Array(16).fill(b);
  const MARKUP = 'Results <img src=x onerror="alert(1)"> ready';
  const byPatient = sealed(patient, 9, hushwire.encodeConversationMessage(conversation, 9, id(1), 1000, 'from the patient'));
  const byAda = sealed(ada, 9, hushwire.encodeConversationMessage(conversation, 9, id(2), 2000, MARKUP));
  const recall = sealed(ada, 9, hushwire.encodeRecall(conversation, id(2), 3000));
  // Ada left at epoch 4 and Sue joined read-only at 5: a message Ada names at epoch 5 is flagged.
  const notMember = sealed(ada, 5, hushwire.encodeConversationMessage(conversation, 5, id(3), 1500, 'while away'));

  // The frame `hushwire archive` sends: FetchArchive (0x1a), conversation, from_index.
  const fetch = hushwire.fetchArchiveFrame(7, conversation, 16);
  assert.deepEqual([...fetch.slice(0, 6)], [1, 0x1a, 0, 0, 0, 7]);
  assert.equal(hex(fetch.slice(6, 22)), m.conversation_id);
  assert.deepEqual([...fetch.slice(22)], [0, 0, 0, 0, 0, 0, 0, 16]);
  assert.throws(() => hushwire.fetchArchiveFrame(7, conversation.slice(1), 0), /16 bytes/);
  assert.throws(() => hushwire.fetchArchiveFrame(7, conversation, 1.5), /whole number/);

  // The relay's answer, ArchiveItems (0x93): next_index[8] ‖ count[1] ‖ (filer[36] ‖
  // filed_at_ms[8] ‖ len[4] ‖ envelope)*.
  const be = (n, bytes) => {
    const out = new Uint8Array(bytes);
    let v = BigInt(n);
    for (let i = bytes - 1; i >= 0; i--, v >>= 8n) out[i] = Number(v & 0xffn);
    return out;
  };
  const item = (filer, env) => {
    const [fp, device] = filer.split(':');
    return [...unhex(fp), ...be(device, 4), ...be(1_710_010_000_123, 8), ...be(env.length, 4), ...env];
  };
  const itemsFrame = (...items) =>
    new Uint8Array([1, 0x93, 0, 0, 0, 8, ...be(items.length, 8), items.length, ...items.flat()]);

  const reading = new hushwire.ArchiveReading(conversation);
  const answer = hushwire.decodeFrame(
    itemsFrame(item(patient, byPatient), item(ada, byAda), item(ada, recall), item(ada, notMember), item(patient, byAda)),
  );
  assert.equal(answer.queueKind, 'archiveItems');
  assert.equal(answer.archiveItemCount, 5);
  assert.equal(answer.archiveNextIndex, 5);
  assert.equal(reading.addItems(key, answer, membership), 5);
  const [p, a, r, away, misfiled] = reading.entries();
  assert.equal(p.kind, 'message');
  assert.equal(p.text, 'from the patient');
  assert.equal(p.from, 'patient');
  assert.equal(p.sender, patient);
  assert.equal(p.verified, true);
  assert.equal(p.recalledBy, '');
  assert.equal(a.text, MARKUP, 'text, as written');
  assert.match(a.from, /^.+ — verified agent of /);
  assert.equal(a.id, hex(id(2)));
  assert.equal(a.epoch, 9);
  assert.equal(a.sentAtMs, 2000);
  assert.equal(a.filedAtMs, 1_710_010_000_123);
  assert.equal(a.verified, true);
  assert.equal(a.recalledBy, a.from, 'recalled by its sender');
  assert.equal(a.recallAtMs, 3000);
  assert.equal(r.kind, 'recall');
  assert.equal(r.id, hex(id(2)));
  assert.equal(r.recalledAtMs, 3000);
  assert.equal(away.verified, false, 'not a member that writes at epoch 5: flagged');
  assert.equal(misfiled.verified, false, 'filed by another device than it names: flagged');

  // Hostile: truncated, tampered, trailing bytes, a payload that is not one, another key,
  // another conversation, another frame.
  const before = reading.length;
  for (const cut of [0, 1, 57, 58, 62, byAda.length - 1]) {
    assert.throws(() => reading.addEnvelope(key, byAda.slice(0, cut), ada, 1, membership), /not an archive envelope/);
  }
  for (const at of [62, byAda.length - 1, 30, 20]) {
    const tampered = byAda.slice();
    tampered[at] ^= 1;
    assert.throws(() => reading.addEnvelope(key, tampered, ada, 1, membership), /does not open|not an archive envelope/);
  }
  assert.throws(() => reading.addEnvelope(key, new Uint8Array([...byAda, 0]), ada, 1, membership), /not an archive envelope/);
  const tamperedInFrame = byAda.slice();
  tamperedInFrame[byAda.length - 5] ^= 0x80;
  const hostile = hushwire.decodeFrame(itemsFrame(item(ada, byAda), item(ada, tamperedInFrame)));
  assert.throws(() => reading.addItems(key, hostile, membership), /does not open with this key/);
  assert.throws(() => hushwire.decodeFrame(itemsFrame(item(ada, byAda.slice(0, 70)))));
  // The vectors' own sealed message opens, but its payload is not a client payload.
  assert.throws(() => reading.addEnvelope(key, unhex(m.archive_seal.envelope), ada, 1, membership), /payload is malformed/);
  const other = hushwire.ArchiveKey.openFile(
    new Uint8Array(fs.readFileSync(path.resolve(__dirname, '..', '..', 'hushwire', 'tests', 'fixtures', 'archive-key-v1.sealed'))),
    'archive passphrase',
  );
  assert.throws(() => reading.addEnvelope(other, byAda, ada, 1, membership), /does not open with this key/);
  const elsewhere = new hushwire.ArchiveReading(new Uint8Array(16));
  assert.throws(() => elsewhere.addEnvelope(key, byAda, ada, 1, membership), /another conversation/);
  assert.throws(() => reading.addItems(key, hushwire.decodeFrame(hushwire.fetchArchivePolicyFrame(1)), membership), /not an answer/);
  assert.equal(reading.length, before, 'nothing kept from a refused envelope');
  reading.addEnvelope(key, byPatient, patient, 5, membership);
  assert.equal(reading.length, before + 1);
  for (const o of [p, a, r, away, misfiled, reading, elsewhere, other, key, membership, clinic]) o.free();
});

test('a hand-off note (StaffNote, conversations.md §8.5) is encoded by the core, travels encrypted and decodes as text', () => {
  const conversation = crypto.getRandomValues(new Uint8Array(16));
  assert.equal(hushwire.staffNoteMaxLen(), 200);
  const note = 'Allergic to <b>penicillin</b> — é';
  const padded = hushwire.encodeStaffNote(conversation, note);
  assert.equal(padded.length % 256, 0);
  const agent = new Account(1, 1_700_000_000);
  const colleague = new Account(1, 1_700_000_000);
  const ciphertext = Session.initiate(agent, colleague.prekeyBundle()).encrypt(padded);
  const p = hushwire.decodePayload(colleague.accept(ciphertext).plaintext);
  assert.equal(p.kind, 'staffNote');
  assert.equal(p.text, note);
  assert.equal(p.conversation, hex(conversation));
  // 201 bytes, two lines, empty: refused in words, without the note's text.
  assert.throws(() => hushwire.encodeStaffNote(conversation, 'é'.repeat(100) + 'x'), /at most|1 to 200 bytes.*201 bytes/);
  assert.throws(() => hushwire.encodeStaffNote(conversation, 'two\nlines'), /one line/);
  assert.throws(() => hushwire.encodeStaffNote(conversation, ''), /one line/);
  assert.throws(() => hushwire.encodeStaffNote(conversation.slice(1), 'ok'), /16 bytes/);
  assert.equal(hushwire.fetchOnDutyFrame(7)[1], 0x1d);
});
