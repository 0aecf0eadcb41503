// The published test vectors (docs/vectors/keys.json, handshake.json, conversation.json,
// sealed_session.json), reproduced byte for byte by the WebAssembly build through its JS API:
// the same accounts, bundle, handshake, 31 wire messages, gaps and sealed session as the native
// generator (crates/hushwire-vectors). The RNG draws each step consumed are published; the
// test-only VectorRng replays them, and every step must consume exactly its draws.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { hushwire, vector, hex, unhex, utf8, text, draws } = require('./common.js');

const keys = vector('keys.json');
const handshake = vector('handshake.json');
const conversation = vector('conversation.json');
const sealedSession = vector('sealed_session.json');
// Account::new's time in the generator; it is not part of any encoding.
const NOW = 1_700_000_000;

function replay(list, step) {
  const rng = draws(list);
  const result = step(rng);
  assert.equal(rng.remaining, 0, 'the step consumed exactly the published draws');
  rng.free();
  return result;
}

test('published vectors through the WebAssembly API', async (t) => {
  let alice;
  let bob;
  let aliceSession;
  let bobSession;

  await t.test('keys.json: accounts, prekeys and the bundle', () => {
    alice = replay(keys.alice.draws, (rng) => rng.newAccount(keys.alice.device_id, NOW));
    assert.equal(alice.deviceId, 1);
    assert.equal(hex(alice.identityKey()), keys.alice.identity_key);
    assert.equal(alice.fingerprint(), keys.alice.fingerprint);

    const b = keys.bob;
    bob = replay(b.account.draws, (rng) => rng.newAccount(b.account.device_id, NOW));
    assert.equal(hex(bob.identityKey()), b.account.identity_key);
    assert.equal(bob.fingerprint(), b.account.fingerprint);
    assert.equal(replay(b.one_time_prekey.draws, (rng) => rng.generateOneTimePrekeys(bob, 1)), 1);
    assert.equal(
      replay(b.one_time_kem_prekey.draws, (rng) => rng.generateOneTimeKemPrekeys(bob, 1)),
      1,
    );
    assert.equal(bob.oneTimePrekeyCount, 1);
    assert.equal(bob.oneTimeKemPrekeyCount, 1);
    // The whole bundle: signed prekey, both one-time prekeys and every signature over them.
    assert.equal(hex(bob.prekeyBundle()), keys.bob_bundle);
  });

  await t.test('handshake.json: the first (prekey) message, both sides', () => {
    assert.equal(handshake.bundle, keys.bob_bundle);
    aliceSession = replay(handshake.initiator_draws, (rng) =>
      rng.initiate(alice, unhex(handshake.bundle)),
    );
    assert.equal(aliceSession.safetyNumber(), keys.safety_number);
    assert.equal(aliceSession.remoteFingerprint(), keys.bob.account.fingerprint);
    assert.equal(aliceSession.awaitingReply, true);

    const first = handshake.first_message;
    const wire = aliceSession.encrypt(utf8(first.plaintext));
    assert.equal(hex(wire), first.wire);

    const accepted = replay(handshake.responder_draws, (rng) => rng.accept(bob, wire));
    assert.equal(text(accepted.plaintext), first.plaintext);
    bobSession = accepted.takeSession();
    accepted.free();
    assert.equal(bobSession.safetyNumber(), keys.safety_number);
    assert.equal(hex(bobSession.remoteIdentityKey()), keys.alice.identity_key);
    // Accepting used up the one-time prekeys the message named.
    assert.equal(bob.oneTimePrekeyCount, 0);
    assert.equal(bob.oneTimeKemPrekeyCount, 0);
  });

  await t.test('conversation.json: 30 messages, reordered, every wire byte and gap', () => {
    const { messages, deliveries, schedule } = conversation;
    assert.equal(messages.length, 30);
    const sessions = { alice: aliceSession, bob: bobSession };
    const sent = new Map();
    let next = 0;
    for (const step of schedule) {
      if ('send' in step) {
        const m = messages[step.send];
        assert.equal(m.number, step.send);
        const wire = sessions[m.sender].encrypt(utf8(m.plaintext));
        assert.equal(hex(wire), m.wire, `message ${m.number} from ${m.sender}`);
        sent.set(m.number, wire);
      } else {
        const d = deliveries[next++];
        assert.equal(d.number, step.deliver);
        const session = sessions[d.receiver];
        const plaintext = replay(d.receiver_draws, (rng) =>
          rng.decrypt(session, sent.get(d.number)),
        );
        assert.equal(text(plaintext), messages[d.number].plaintext);
        const gaps = session.missingMessages().map((g) => ({
          chain: hex(g.chain),
          missing: Array.from(g.missing),
        }));
        assert.deepEqual(gaps, d.missing_after, `gaps after delivering message ${d.number}`);
      }
    }
    assert.equal(next, deliveries.length);
    assert.equal(aliceSession.awaitingReply, false);
  });

  await t.test('sealed_session.json: the sealed bytes and the message after reload', () => {
    const key = new hushwire.StorageKey(unhex(sealedSession.storage_key));
    const sealed = replay(sealedSession.draws, (rng) => rng.sealSession(aliceSession, key));
    assert.equal(hex(sealed), sealedSession.sealed);

    const reloaded = hushwire.Session.unseal(unhex(sealedSession.sealed), key);
    const after = reloaded.encrypt(utf8(sealedSession.next_plaintext));
    assert.equal(hex(after), sealedSession.next_message);
    // The original, still in memory, says the same.
    const fromOriginal = aliceSession.encrypt(utf8(sealedSession.next_plaintext));
    assert.equal(hex(fromOriginal), sealedSession.next_message);
    // And Bob reads it.
    assert.equal(text(bobSession.decrypt(after)), sealedSession.next_plaintext);
  });

  await t.test('the published bundle with one byte changed is refused', () => {
    const bundle = unhex(keys.bob_bundle);
    bundle[bundle.length - 1] ^= 0x01; // inside the ML-KEM prekey's signature
    assert.throws(() => hushwire.Session.initiate(alice, bundle), (e) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /^prekey bundle rejected: /);
      return true;
    });
  });
});
