//! The Double Ratchet (Signal's specification, `docs/protocol.md` §5).
//!
//! Decryption plans every change (new chain keys, skipped keys, a DH ratchet step) on copies,
//! authenticates the message with the planned message key, and only then commits the plan. A
//! message that fails therefore leaves the state exactly as it was.

mod keys;
mod skipped;

use std::collections::VecDeque;

use hushwire_proto::X25519PublicKey;
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

pub use skipped::{Gap, MAX_SKIPPED_CHAINS, MAX_SKIPPED_KEYS};

pub(crate) use keys::{ChainKey, MessageKey, RootKey};
pub(crate) use skipped::SkippedKeys;

use crate::error::{DecryptionError, EncryptionError};
use crate::keys::{diffie_hellman, generate_x25519};
use crate::wire::{MessageHeader, RatchetMessage};

/// The most message keys of one jump that are kept: a message may be up to [`MAX_JUMP`] ahead of
/// the next expected one, but only the keys of the `MAX_SKIP` messages just before it are
/// stored; the earlier ones are given up as lost and counted (`docs/protocol.md` §5.4).
pub const MAX_SKIP: u32 = 1000;

/// The furthest ahead of the next expected message, in one chain, that a message may be (the
/// same bound as libsignal's forward jumps). Walking the chain costs one HMAC per position
/// (two for the last [`MAX_SKIP`], whose keys are kept), so this bounds the work a forged header
/// can cause before it is authenticated: at most `2 × MAX_JUMP + 2 × MAX_SKIP` HMACs and one
/// X25519 per message (§5.3). A loss larger than this wedges the session; the client then
/// starts a new one (`docs/client.md` §5.13).
pub const MAX_JUMP: u32 = 25_000;

/// How many of the peer's earlier ratchet keys are remembered, so a message replayed from an
/// old chain is reported as a duplicate rather than as a failed DH step.
const RETIRED_CHAINS: usize = MAX_SKIPPED_CHAINS;

/// Our current ratchet key pair. The public half is kept so encrypt never recomputes it.
#[derive(Clone)]
pub(crate) struct RatchetKeyPair {
    pub(crate) secret: StaticSecret,
    pub(crate) public: X25519PublicKey,
}

/// The peer's current sending chain, as we receive it.
#[derive(Clone)]
pub(crate) struct ReceivingChain {
    pub(crate) ratchet_key: X25519PublicKey,
    pub(crate) chain: ChainKey,
}

/// The whole ratchet state of one session.
#[derive(Clone)]
pub(crate) struct DoubleRatchet {
    pub(crate) root: RootKey,
    pub(crate) ours: RatchetKeyPair,
    /// `None` only inside a responder's construction, before the first message is accepted.
    pub(crate) sending: Option<ChainKey>,
    pub(crate) previous_sending_length: u32,
    pub(crate) receiving: Option<ReceivingChain>,
    pub(crate) retired: VecDeque<X25519PublicKey>,
    pub(crate) skipped: SkippedKeys,
}

/// A planned DH ratchet step, committed only once the message authenticates.
struct RatchetStep {
    root: RootKey,
    ours: RatchetKeyPair,
    sending: ChainKey,
}

/// What walking a chain forward yields: the keys kept for the messages skipped on the way (at
/// most [`MAX_SKIP`], the nearest ones), how many earlier skipped ones were given up, the
/// message's own key and the chain key after it.
struct Walk {
    kept: Vec<MessageKey>,
    given_up: u64,
    key: MessageKey,
    next: ChainKey,
}

/// Walks `chain` from its index to `target`, keeping the keys of the last [`MAX_SKIP`] positions
/// before `target` and only stepping the chain key over the earlier ones. Refuses a walk longer
/// than [`MAX_JUMP`] (`error` builds the refusal from the distance).
fn walk(
    chain: &ChainKey,
    target: u64,
    error: impl FnOnce(u32) -> DecryptionError,
) -> Result<(Vec<MessageKey>, u64, ChainKey), DecryptionError> {
    let distance = target.saturating_sub(chain.index);
    if distance > u64::from(MAX_JUMP) {
        return Err(error(u32::try_from(distance).unwrap_or(u32::MAX)));
    }
    let keep_from = target.saturating_sub(u64::from(MAX_SKIP));
    let given_up = keep_from.saturating_sub(chain.index);
    let mut kept = Vec::with_capacity(usize::try_from(distance - given_up).unwrap_or(0));
    let mut current = chain.clone();
    while current.index < target {
        if current.index >= keep_from {
            kept.push(current.message_key());
        }
        current = current.next();
    }
    Ok((kept, given_up, current))
}

/// The keys for `chain.index ..= index`: see [`Walk`]. Refuses to walk more than [`MAX_JUMP`].
fn advance(chain: &ChainKey, index: u32) -> Result<Walk, DecryptionError> {
    let target = u64::from(index);
    if target < chain.index {
        return Err(DecryptionError::DuplicateMessage { index });
    }
    let (kept, given_up, current) = walk(chain, target, |skip| DecryptionError::TooFarAhead {
        index,
        skip,
    })?;
    Ok(Walk {
        kept,
        given_up,
        key: current.message_key(),
        next: current.next(),
    })
}

/// Keys for the rest of a chain that has ended after `length` messages: the last [`MAX_SKIP`]
/// are kept. A tail longer than [`MAX_JUMP`] is not walked at all; all of it is given up (the
/// chain is over, so nothing after it depends on walking it).
fn finish(chain: &ChainKey, length: u32) -> Result<(Vec<MessageKey>, u64), DecryptionError> {
    let end = u64::from(length);
    if end < chain.index {
        return Err(DecryptionError::InconsistentChainLength);
    }
    let tail = end - chain.index;
    if tail > u64::from(MAX_JUMP) {
        return Ok((Vec::new(), tail));
    }
    let (kept, given_up, _) = walk(chain, end, |_| DecryptionError::InconsistentChainLength)?;
    Ok((kept, given_up))
}

fn dh(
    ours: &StaticSecret,
    theirs: &X25519PublicKey,
) -> Result<Zeroizing<[u8; 32]>, DecryptionError> {
    diffie_hellman(ours, theirs).ok_or(DecryptionError::NonContributoryKey)
}

/// AD for one message: the session's associated data, then the encoded header.
fn message_ad(session_ad: &[u8], header: &MessageHeader) -> Vec<u8> {
    let mut ad = Vec::with_capacity(session_ad.len() + crate::wire::HEADER_LEN);
    ad.extend_from_slice(session_ad);
    ad.extend_from_slice(&header.to_bytes());
    ad
}

impl DoubleRatchet {
    /// Alice's initial state: `RK, CKs = KDF_RK(SK, DH(ratchet, SPK_B))`. Draws 32 bytes from
    /// `rng` for her first ratchet key.
    pub(crate) fn initiator<R: CryptoRng + ?Sized>(
        shared_secret: &[u8; 32],
        their_signed_prekey: &X25519PublicKey,
        rng: &mut R,
    ) -> Result<Self, DecryptionError> {
        let (secret, public) = generate_x25519(rng);
        let (root, sending) = RootKey(*shared_secret).step(&*dh(&secret, their_signed_prekey)?);
        Ok(Self {
            root,
            ours: RatchetKeyPair { secret, public },
            sending: Some(sending),
            previous_sending_length: 0,
            receiving: None,
            retired: VecDeque::new(),
            skipped: SkippedKeys::default(),
        })
    }

    /// Bob's state before the first message: `RK = SK`, his ratchet key is his signed prekey.
    pub(crate) fn responder(shared_secret: &[u8; 32], signed_prekey: RatchetKeyPair) -> Self {
        Self {
            root: RootKey(*shared_secret),
            ours: signed_prekey,
            sending: None,
            previous_sending_length: 0,
            receiving: None,
            retired: VecDeque::new(),
            skipped: SkippedKeys::default(),
        }
    }

    /// Encrypts under the next sending message key and advances the sending chain. Returns the
    /// message and the key used (for test-vector traces).
    pub(crate) fn encrypt(
        &mut self,
        session_ad: &[u8],
        plaintext: &[u8],
    ) -> Result<(RatchetMessage, MessageKey), EncryptionError> {
        let chain = self
            .sending
            .as_ref()
            .ok_or(EncryptionError::NoSendingChain)?;
        let index = u32::try_from(chain.index).map_err(|_| EncryptionError::ChainExhausted)?;
        let header = MessageHeader {
            ratchet_key: self.ours.public,
            previous_chain_length: self.previous_sending_length,
            index,
        };
        let key = chain.message_key();
        let ciphertext = key.encrypt(&message_ad(session_ad, &header), plaintext);
        self.sending = Some(chain.next());
        Ok((RatchetMessage { header, ciphertext }, key))
    }

    /// Decrypts, committing state changes only if the message authenticates.
    pub(crate) fn decrypt<R: CryptoRng + ?Sized>(
        &mut self,
        session_ad: &[u8],
        message: &RatchetMessage,
        rng: &mut R,
    ) -> Result<Vec<u8>, DecryptionError> {
        let header = &message.header;
        let ad = message_ad(session_ad, header);
        let open = |key: &MessageKey| {
            key.decrypt(&ad, &message.ciphertext)
                .ok_or(DecryptionError::AuthenticationFailed)
        };

        // 1. The peer's current chain, this message or one after the next expected.
        if let Some(receiving) = &mut self.receiving
            && receiving.ratchet_key == header.ratchet_key
            && u64::from(header.index) >= receiving.chain.index
        {
            let walk = advance(&receiving.chain, header.index)?;
            let plaintext = open(&walk.key)?;
            receiving.chain = walk.next;
            self.skipped
                .extend(&header.ratchet_key, walk.kept, walk.given_up);
            return Ok(plaintext);
        }

        // 2. A message that arrived late: its key was kept when later ones arrived first.
        if let Some(position) = self.skipped.position(&header.ratchet_key, header.index) {
            let plaintext = self
                .skipped
                .get(position)
                .map(&open)
                .ok_or(DecryptionError::AuthenticationFailed)??;
            self.skipped.remove(position);
            return Ok(plaintext);
        }

        // 3. Anything else from a chain we already know is a replay (or its key was discarded).
        let known = self.receiving.as_ref().map(|r| r.ratchet_key);
        if known == Some(header.ratchet_key) || self.retired.contains(&header.ratchet_key) {
            return Err(DecryptionError::DuplicateMessage {
                index: header.index,
            });
        }

        // 4. A new chain: DH ratchet step.
        let finished = match &self.receiving {
            Some(r) => finish(&r.chain, header.previous_chain_length)?,
            None => (Vec::new(), 0),
        };
        let (root, receiving_chain) = self
            .root
            .step(&*dh(&self.ours.secret, &header.ratchet_key)?);
        let walk = advance(&receiving_chain, header.index)?;
        let plaintext = open(&walk.key)?;

        let step = self.plan_sending_step(&root, &header.ratchet_key, rng)?;
        self.commit_step(step, header, finished, walk);
        Ok(plaintext)
    }

    /// Our half of a DH ratchet step: a new ratchet key (32 bytes from `rng`) and the sending
    /// chain `RK, CKs = KDF_RK(RK, DH(new, their_key))`.
    fn plan_sending_step<R: CryptoRng + ?Sized>(
        &self,
        root: &RootKey,
        their_key: &X25519PublicKey,
        rng: &mut R,
    ) -> Result<RatchetStep, DecryptionError> {
        let (secret, public) = generate_x25519(rng);
        let (root, sending) = root.step(&*dh(&secret, their_key)?);
        Ok(RatchetStep {
            root,
            ours: RatchetKeyPair { secret, public },
            sending,
        })
    }

    fn commit_step(
        &mut self,
        step: RatchetStep,
        header: &MessageHeader,
        (finished, finished_given_up): (Vec<MessageKey>, u64),
        walk: Walk,
    ) {
        if let Some(old) = self.receiving.take() {
            self.skipped
                .extend(&old.ratchet_key, finished, finished_given_up);
            self.retired.push_back(old.ratchet_key);
            while self.retired.len() > RETIRED_CHAINS {
                self.retired.pop_front();
            }
        }
        self.skipped
            .extend(&header.ratchet_key, walk.kept, walk.given_up);
        self.previous_sending_length = self
            .sending
            .as_ref()
            .map_or(0, |c| u32::try_from(c.index).unwrap_or(u32::MAX));
        self.root = step.root;
        self.ours = step.ours;
        self.sending = Some(step.sending);
        self.receiving = Some(ReceivingChain {
            ratchet_key: header.ratchet_key,
            chain: walk.next,
        });
    }

    /// Missing messages of the peer's chains, oldest chain first.
    pub(crate) fn gaps(&self) -> Vec<Gap> {
        self.skipped.gaps()
    }
}
