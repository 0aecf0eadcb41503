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

/// The furthest ahead of the next expected message, in one chain, that a message may be. Each
/// skipped message costs two HMACs before the message is authenticated, so this also bounds the
/// work a forged header can cause.
pub const MAX_SKIP: u32 = 1000;

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

/// The keys for `chain.index ..= index`: skipped ones, the message's own key, and the chain key
/// after it. Refuses to skip more than [`MAX_SKIP`].
fn advance(
    chain: &ChainKey,
    index: u32,
) -> Result<(Vec<MessageKey>, MessageKey, ChainKey), DecryptionError> {
    let target = u64::from(index);
    if target < chain.index {
        return Err(DecryptionError::DuplicateMessage { index });
    }
    let skip = target - chain.index;
    if skip > u64::from(MAX_SKIP) {
        return Err(DecryptionError::TooFarAhead {
            index,
            skip: u32::try_from(skip).unwrap_or(u32::MAX),
        });
    }
    let mut skipped = Vec::with_capacity(usize::try_from(skip).unwrap_or(0));
    let mut current = chain.clone();
    while current.index < target {
        skipped.push(current.message_key());
        current = current.next();
    }
    Ok((skipped, current.message_key(), current.next()))
}

/// Keys for the rest of a chain that has ended after `length` messages.
fn finish(chain: &ChainKey, length: u32) -> Result<Vec<MessageKey>, DecryptionError> {
    let end = u64::from(length);
    if end < chain.index {
        return Err(DecryptionError::InconsistentChainLength);
    }
    if end - chain.index > u64::from(MAX_SKIP) {
        return Err(DecryptionError::TooFarAhead {
            index: length,
            skip: u32::try_from(end - chain.index).unwrap_or(u32::MAX),
        });
    }
    let mut keys = Vec::new();
    let mut current = chain.clone();
    while current.index < end {
        keys.push(current.message_key());
        current = current.next();
    }
    Ok(keys)
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
            let (skipped, key, next) = advance(&receiving.chain, header.index)?;
            let plaintext = open(&key)?;
            receiving.chain = next;
            self.skipped.extend(&header.ratchet_key, skipped);
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
            None => Vec::new(),
        };
        let (root, receiving_chain) = self
            .root
            .step(&*dh(&self.ours.secret, &header.ratchet_key)?);
        let (skipped, key, next) = advance(&receiving_chain, header.index)?;
        let plaintext = open(&key)?;

        let step = self.plan_sending_step(&root, &header.ratchet_key, rng)?;
        self.commit_step(step, header, finished, skipped, next);
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
        finished: Vec<MessageKey>,
        skipped: Vec<MessageKey>,
        next: ChainKey,
    ) {
        if let Some(old) = self.receiving.take() {
            self.skipped.extend(&old.ratchet_key, finished);
            self.retired.push_back(old.ratchet_key);
            while self.retired.len() > RETIRED_CHAINS {
                self.retired.pop_front();
            }
        }
        self.skipped.extend(&header.ratchet_key, skipped);
        self.previous_sending_length = self
            .sending
            .as_ref()
            .map_or(0, |c| u32::try_from(c.index).unwrap_or(u32::MAX));
        self.root = step.root;
        self.ours = step.ours;
        self.sending = Some(step.sending);
        self.receiving = Some(ReceivingChain {
            ratchet_key: header.ratchet_key,
            chain: next,
        });
    }

    /// Missing messages of the peer's chains, oldest chain first.
    pub(crate) fn gaps(&self) -> Vec<Gap> {
        self.skipped.gaps()
    }
}
