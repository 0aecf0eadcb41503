//! Issue 10's property: two clients driven through random interleavings of sending, loss,
//! reordering, duplication, restarts, restores from old copies and signed prekey rotations
//! always converge: once the faults stop, both outboxes drain within a bounded number of rounds,
//! a message sent by each side afterwards arrives exactly once, no message is shown twice, and
//! no (chain, index) — so no message key and nonce — ever carries two different messages.
//!
//! The network and the relay are played here: each pump is a connection (with the relay's
//! store-epoch answer, `docs/client.md` §5.14), each delivery goes through the real receive
//! pipeline, each encryption through the real send pipeline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use hushwire::proto::codec::Codec as _;
use hushwire::proto::relay::Delivery;
use hushwire::wire::{Message, MessageHeader};
use proptest::prelude::*;

use super::{Client, ClientOptions};
use crate::address::Address;
use crate::contact::ContactId;
use crate::os::{now_ms, rng};
use crate::store;
use crate::vault::{KdfParams, Secret};

/// Rounds of "every side sends what it has, every envelope is delivered" that a settled
/// conversation may need: a reset request, the resends, their receipts, and a margin.
const SETTLE_ROUNDS: usize = 8;

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    Pump(usize),
    Deliver(usize, usize),
    Drop(usize, usize),
    Duplicate(usize, usize),
    Restart(usize),
    Snapshot(usize),
    Restore(usize),
    Rotate(usize),
    /// Issue 10, case 3 in one step: copy the store, send, restore the copy, send again.
    RollBackAndSend(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let side = 0..2usize;
    prop_oneof![
        6 => side.clone().prop_map(Op::Send),
        5 => side.clone().prop_map(Op::Pump),
        8 => (side.clone(), any::<usize>()).prop_map(|(s, k)| Op::Deliver(s, k)),
        1 => (side.clone(), any::<usize>()).prop_map(|(s, k)| Op::Drop(s, k)),
        1 => (side.clone(), any::<usize>()).prop_map(|(s, k)| Op::Duplicate(s, k)),
        1 => side.clone().prop_map(Op::Restart),
        2 => side.clone().prop_map(Op::Snapshot),
        2 => side.clone().prop_map(Op::Restore),
        2 => side.clone().prop_map(Op::Rotate),
        2 => side.prop_map(Op::RollBackAndSend),
    ]
}

struct Device {
    client: Option<Client>,
    path: PathBuf,
    snapshot: PathBuf,
    has_snapshot: bool,
    peer: ContactId,
    address: Address,
}

struct World {
    _dir: tempfile::TempDir,
    devices: [Device; 2],
    /// Envelopes in flight to each device.
    network: [Vec<Vec<u8>>; 2],
    /// The relay's highest store epoch per device.
    relay_epochs: [u64; 2],
    /// (sender, chain, index) → the digest of the one message sent there.
    places: HashMap<(usize, [u8; 32], u32), Vec<u8>>,
    next_server_id: u128,
    sent: usize,
}

fn options() -> ClientOptions {
    ClientOptions {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        reset_interval: Duration::ZERO,
        ..ClientOptions::default()
    }
}

fn secret() -> Secret {
    Secret::passphrase("correct horse battery staple")
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut clients = Vec::new();
        for name in ["a", "b"] {
            let path = dir.path().join(format!("{name}.db"));
            clients.push((
                Client::create(&path, &secret(), options()).await.unwrap(),
                path,
            ));
        }
        let addresses = [clients[0].0.address().await, clients[1].0.address().await];
        let mut devices = Vec::new();
        for (i, (client, path)) in clients.into_iter().enumerate() {
            let peer = client
                .add_contact("peer", addresses[1 - i], false)
                .await
                .unwrap();
            devices.push(Device {
                client: Some(client),
                snapshot: path.with_extension("snapshot"),
                path,
                has_snapshot: false,
                peer,
                address: addresses[i],
            });
        }
        let [a, b] = <[Device; 2]>::try_from(devices).ok().unwrap();
        Self {
            _dir: dir,
            devices: [a, b],
            network: [Vec::new(), Vec::new()],
            relay_epochs: [0, 0],
            places: HashMap::new(),
            next_server_id: 1,
            sent: 0,
        }
    }

    fn client(&self, i: usize) -> &Client {
        self.devices[i].client.as_ref().unwrap()
    }

    async fn close(&mut self, i: usize) {
        let client = self.devices[i].client.take().unwrap();
        client.inner.db.close().await;
    }

    async fn reopen(&mut self, i: usize) {
        let client = Client::open(&self.devices[i].path, &secret(), options())
            .await
            .unwrap();
        self.devices[i].client = Some(client);
    }

    /// One connection of device `i`: the store-epoch exchange, then every queued payload
    /// encrypted and handed to the network.
    async fn pump(&mut self, i: usize) {
        let client = self.client(i).clone();
        let epoch = client.next_store_epoch().await.unwrap();
        let before = self.relay_epochs[i];
        self.relay_epochs[i] = before.max(epoch);
        client.store_epoch_seen(epoch, before).await.unwrap();
        let bundle = {
            let peer = self.client(1 - i);
            peer.inner
                .state
                .lock()
                .await
                .account
                .prekey_bundle()
                .unwrap()
        };
        let rows = {
            let mut c = client.inner.db.acquire().await.unwrap();
            store::outbox(&mut c).await.unwrap()
        };
        for row in rows {
            let ciphertext = match row.ciphertext {
                // A resend: the very bytes stored when they were first encrypted.
                Some(c) => c,
                None => {
                    client.start_session(row.contact_id, &bundle).await.unwrap();
                    let (ciphertext, header) = client
                        .encrypt_outbox_row(row.id, row.contact_id, &row.sealed)
                        .await
                        .unwrap();
                    self.record_place(i, &header, &ciphertext);
                    ciphertext
                }
            };
            client
                .outbox_entry_sent(row.id, row.contact_id, &row.sealed)
                .await
                .unwrap();
            self.network[1 - i].push(ciphertext);
        }
    }

    /// Remembers where in its chains a message was encrypted; the same place twice with
    /// different bytes would be a message key and nonce used twice.
    fn record_place(&mut self, sender: usize, header: &MessageHeader, ciphertext: &[u8]) {
        let message = Message::from_bytes(ciphertext).unwrap();
        let body = match &message {
            Message::PreKey(p) => p.message.ciphertext.clone(),
            Message::Ratchet(m) => m.ciphertext.clone(),
        };
        let place = (sender, *header.ratchet_key.as_bytes(), header.index);
        if let Some(earlier) = self.places.insert(place, body.clone()) {
            assert_eq!(earlier, body, "a message key and nonce were used twice");
        }
    }

    async fn deliver(&mut self, i: usize, k: usize) {
        if self.network[i].is_empty() {
            return;
        }
        let payload = self.network[i].remove(k % self.network[i].len());
        let server_id = self.next_server_id.to_be_bytes();
        self.next_server_id += 1;
        let sender = self.devices[1 - i].address.to_device_address();
        self.client(i)
            .receive_now(Delivery {
                server_id,
                sender,
                server_time_ms: now_ms(),
                payload,
            })
            .await
            .unwrap();
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::RollBackAndSend(i) => {
                for step in [
                    Op::Snapshot(i),
                    Op::Send(i),
                    Op::Pump(i),
                    Op::Restore(i),
                    Op::Send(i),
                    Op::Pump(i),
                ] {
                    Box::pin(self.apply(&step)).await;
                }
            }
            Op::Send(i) => {
                self.sent += 1;
                let peer = self.devices[i].peer;
                let text = format!("m{}", self.sent);
                self.client(i).send_text(peer, &text).await.unwrap();
            }
            Op::Pump(i) => self.pump(i).await,
            Op::Deliver(i, k) => self.deliver(i, k).await,
            Op::Drop(i, k) => {
                if !self.network[i].is_empty() {
                    let n = self.network[i].len();
                    self.network[i].remove(k % n);
                }
            }
            Op::Duplicate(i, k) => {
                if !self.network[i].is_empty() {
                    let n = self.network[i].len();
                    let copy = self.network[i][k % n].clone();
                    self.network[i].push(copy);
                }
            }
            Op::Restart(i) => {
                self.close(i).await;
                self.reopen(i).await;
            }
            Op::Snapshot(i) => {
                let snapshot = self.devices[i].snapshot.clone();
                let _ = std::fs::remove_file(&snapshot);
                let into = format!("VACUUM INTO '{}'", snapshot.display());
                let mut c = self.client(i).inner.db.acquire().await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(into))
                    .execute(&mut *c)
                    .await
                    .unwrap();
                self.devices[i].has_snapshot = true;
            }
            Op::Restore(i) => {
                if !self.devices[i].has_snapshot {
                    return;
                }
                self.close(i).await;
                let path = self.devices[i].path.clone();
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                std::fs::copy(&self.devices[i].snapshot, &path).unwrap();
                self.reopen(i).await;
            }
            Op::Rotate(i) => {
                let client = self.client(i).clone();
                let mut state = client.inner.state.lock().await;
                let mut account = state.account.clone();
                account.rotate_signed_prekey(now_ms() / 1000, &mut rng());
                let mut c = client.inner.db.acquire().await.unwrap();
                client.save_account(&mut c, &account).await.unwrap();
                state.account = account;
            }
        }
    }

    async fn outbox_len(&self, i: usize) -> usize {
        self.client(i).outbox_len().await.unwrap()
    }

    /// Rounds of pumping both sides and delivering everything in order, until nothing moves.
    /// Returns how many rounds it took, or `None` if it did not settle.
    async fn settle(&mut self) -> Option<usize> {
        for round in 0..SETTLE_ROUNDS {
            if self.network.iter().all(Vec::is_empty)
                && self.outbox_len(0).await == 0
                && self.outbox_len(1).await == 0
            {
                return Some(round);
            }
            for i in 0..2 {
                self.pump(i).await;
            }
            for i in 0..2 {
                while !self.network[i].is_empty() {
                    self.deliver(i, 0).await;
                }
            }
        }
        None
    }

    async fn unread_texts(&self, i: usize) -> Vec<String> {
        self.client(i)
            .unread()
            .await
            .unwrap()
            .into_iter()
            .map(|m| String::from_utf8(m.content.to_vec()).unwrap())
            .collect()
    }
}

/// 32 random interleavings per run, or `HUSHWIRE_CONVERGENCE_CASES`.
fn convergence_cases() -> u32 {
    std::env::var("HUSHWIRE_CONVERGENCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// Applies `ops`, lets both sides settle, then checks that a message each side sends
/// afterwards arrives exactly once and that nothing is shown twice.
fn check_converges(ops: &[Op]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut world = World::new().await;
        for op in ops {
            world.apply(op).await;
        }
        let rounds = world.settle().await;
        assert!(
            rounds.is_some(),
            "did not settle within {SETTLE_ROUNDS} rounds after {ops:?}"
        );

        // Afterwards each side's next message arrives exactly once.
        for i in 0..2 {
            let peer = world.devices[i].peer;
            world
                .client(i)
                .send_text(peer, &format!("final-{i}"))
                .await
                .unwrap();
        }
        let rounds = world.settle().await;
        assert!(
            rounds.is_some(),
            "final messages did not settle after {ops:?}"
        );
        for i in 0..2 {
            let texts = world.unread_texts(1 - i).await;
            let finals = texts.iter().filter(|t| **t == format!("final-{i}")).count();
            assert_eq!(
                finals, 1,
                "final-{i} at the peer {finals} times after {ops:?}: {texts:?}"
            );
            let unique: HashSet<_> = texts.iter().collect();
            assert_eq!(
                unique.len(),
                texts.len(),
                "a message shown twice after {ops:?}: {texts:?}"
            );
        }
    });
}

proptest! {
    // `HUSHWIRE_CONVERGENCE_CASES` raises the count when hunting a rare interleaving.
    #![proptest_config(ProptestConfig { cases: convergence_cases(), ..ProptestConfig::default() })]

    #[test]
    fn two_clients_always_converge_after_any_faults(ops in proptest::collection::vec(op(), 10..60)) {
        check_converges(&ops);
    }
}

/// A shrunk case from the same hunt (shrinking a flaky failure: kept as a quick check of a
/// rolled-back sender and a restarted receiver).
#[test]
fn a_rolled_back_sender_and_a_restarted_receiver_converge() {
    use Op::*;
    check_converges(&[
        Snapshot(1),
        Send(1),
        Pump(1),
        Restore(1),
        Pump(0),
        Send(0),
        Send(0),
        Deliver(0, 3_313_616_507_996_941),
        Restart(0),
        Deliver(0, 8_958_162_216_542_789_041),
    ]);
}

/// Found by a 600-case hunt for the CI failure: after rollbacks on both sides, side 1 writes
/// its final message on a session side 0 no longer holds; side 0 took the prekey message for a
/// replay and dropped it silently. In about 70 % of runs before the fix (the session chosen
/// depends on which random base key is smaller).
#[test]
fn a_message_on_a_session_the_receiver_dropped_is_sent_again() {
    use Op::*;
    check_converges(&[
        Deliver(0, 17_573_700_270_493_349_229),
        Send(0),
        Deliver(0, 5_768_438_045_425_970_342),
        Deliver(1, 16_186_706_913_830_350_294),
        RollBackAndSend(1),
        Pump(1),
        Deliver(0, 6_212_315_018_762_203_462),
        Deliver(1, 12_676_536_602_653_611_489),
        Snapshot(1),
        Deliver(0, 6_394_419_108_461_703_536),
        Send(1),
        Deliver(1, 8_833_639_939_028_926_419),
        Deliver(0, 14_420_400_672_586_599_966),
        Duplicate(1, 4_683_147_151_952_020_141),
        Deliver(1, 6_691_909_618_076_362_621),
        Send(0),
        Send(0),
        Deliver(0, 5_372_137_182_163_930_357),
        Restart(0),
        Deliver(0, 6_868_478_158_459_218_423),
        Restore(1),
        Send(1),
        Deliver(0, 16_491_323_943_788_513_337),
        Deliver(1, 252_976_248_710_318_221),
        Deliver(1, 10_837_825_577_797_034_075),
        Rotate(1),
        Pump(1),
        Pump(1),
        Snapshot(1),
        Pump(1),
        Deliver(1, 11_509_961_158_803_050_030),
        Deliver(1, 4_078_342_073_375_806_342),
        Pump(1),
        Send(0),
        Snapshot(0),
        RollBackAndSend(1),
        Snapshot(1),
        Snapshot(1),
        Rotate(1),
        Pump(0),
        Pump(0),
        RollBackAndSend(1),
        RollBackAndSend(1),
        Send(1),
        Rotate(0),
        Pump(1),
        Send(1),
        Snapshot(1),
        Deliver(0, 11_793_731_399_955_304_517),
        Deliver(0, 14_523_487_742_557_161_315),
        Restore(0),
        Deliver(1, 16_084_262_172_132_651_620),
        Deliver(0, 1_148_065_349_124_414_520),
        Restart(1),
        Deliver(0, 2_327_504_149_004_885_501),
        Deliver(0, 8_551_696_426_923_256_347),
        Deliver(1, 15_215_538_440_136_447_541),
    ]);
}

/// `GapDetected` when later messages overtake earlier ones, and `GapClosed` once the last
/// missing one arrives (not before): the warning a person sees is taken back (`client.md` §5.5).
#[test]
fn a_gap_is_reported_and_then_reported_closed() {
    use crate::event::Event;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut w = World::new().await;
        // A session both ways first (a new inbound session's first message is not checked),
        // every receipt delivered.
        w.apply(&Op::Send(0)).await;
        assert!(w.settle().await.is_some());
        for _ in 0..3 {
            w.apply(&Op::Send(0)).await;
        }
        w.apply(&Op::Pump(0)).await;
        assert_eq!(w.network[1].len(), 3);
        let mut events = w.client(1).events();
        let gaps = |events: &mut tokio::sync::broadcast::Receiver<Event>| {
            let mut seen = Vec::new();
            while let Ok(e) = events.try_recv() {
                match e {
                    Event::GapDetected { missing, .. } => seen.push(format!("gap {missing}")),
                    Event::GapClosed { .. } => seen.push("closed".to_owned()),
                    _ => {}
                }
            }
            seen
        };
        w.apply(&Op::Deliver(1, 2)).await; // the third first: two missing
        assert_eq!(gaps(&mut events), ["gap 2"]);
        w.apply(&Op::Deliver(1, 0)).await; // the first: one still missing
        assert_eq!(gaps(&mut events), Vec::<String>::new());
        w.apply(&Op::Deliver(1, 0)).await; // the second: none missing
        assert_eq!(gaps(&mut events), ["closed"]);
    });
}
