//! The Double Ratchet with header encryption (Signal's specification, §4; `docs/protocol.md`
//! §5).
//!
//! Every header is encrypted under its sending chain's header key, so the relay sees neither
//! ratchet keys nor counters. A receiver finds a message's chain by trying the header keys it
//! holds, in a fixed order and at most [`MAX_HEADER_KEYS_TRIED`] of them (§5.3).
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

pub(crate) use keys::{ChainKey, HeaderKey, MessageKey, RootKey};
pub(crate) use skipped::SkippedKeys;

use crate::error::{DecryptionError, EncryptionError};
use crate::handshake::HandshakeKeys;
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

/// How many of the peer's earlier chains are remembered (ratchet key and header key) beyond
/// those that still have skipped keys, so a message replayed from an old chain is reported as a
/// duplicate rather than as a failed authentication.
const RETIRED_CHAINS: usize = MAX_SKIPPED_CHAINS;

/// The most header keys a received message is tried under before it is refused: the current
/// receiving chain's, the next chain's, and at most `RETIRED_CHAINS + MAX_SKIPPED_CHAINS`
/// retired chains' (the last five, and up to five older ones that still hold skipped keys).
/// Each try is one XChaCha20-Poly1305 open of 56 bytes, so a forged message costs at most 12 of
/// them (§5.3).
pub const MAX_HEADER_KEYS_TRIED: usize = 2 + RETIRED_CHAINS + MAX_SKIPPED_CHAINS;

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
    pub(crate) header_key: HeaderKey,
    pub(crate) chain: ChainKey,
}

/// One of the peer's earlier chains: what names it and what opens its headers.
#[derive(Clone)]
pub(crate) struct RetiredChain {
    pub(crate) ratchet_key: X25519PublicKey,
    pub(crate) header_key: HeaderKey,
}

/// The whole ratchet state of one session.
#[derive(Clone)]
pub(crate) struct DoubleRatchet {
    pub(crate) root: RootKey,
    pub(crate) ours: RatchetKeyPair,
    /// `None` only inside a responder's construction, before the first message is accepted.
    pub(crate) sending: Option<ChainKey>,
    /// `HKs`: the header key of the sending chain; `None` exactly when `sending` is.
    pub(crate) sending_header: Option<HeaderKey>,
    /// `NHKs`: the header key of our next sending chain.
    pub(crate) next_sending_header: HeaderKey,
    pub(crate) previous_sending_length: u32,
    pub(crate) receiving: Option<ReceivingChain>,
    /// `NHKr`: the header key of the peer's next sending chain.
    pub(crate) next_receiving_header: HeaderKey,
    /// The peer's earlier chains, oldest first (§5.1).
    pub(crate) retired: VecDeque<RetiredChain>,
    pub(crate) skipped: SkippedKeys,
}

/// A planned DH ratchet step, committed only once the message authenticates.
struct RatchetStep {
    root: RootKey,
    ours: RatchetKeyPair,
    sending: ChainKey,
    next_sending_header: HeaderKey,
}

/// Which of the receiver's header keys opened a header.
enum HeaderMatch {
    /// The current receiving chain's.
    Current,
    /// An earlier chain's.
    Retired,
    /// The next chain's: the message starts a new chain (a DH ratchet step).
    Next,
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

/// The keys for `chain.index ..= header.index`: see [`Walk`]. Refuses to walk more than
/// [`MAX_JUMP`].
fn advance(chain: &ChainKey, header: &MessageHeader) -> Result<Walk, DecryptionError> {
    let index = header.index;
    let target = u64::from(index);
    if target < chain.index {
        return Err(DecryptionError::DuplicateMessage {
            chain: header.ratchet_key,
            index,
        });
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
    /// Alice's initial state: `RK, CKs, NHKs = KDF_RK(SK, DH(ratchet, SPK_B))`, `HKs = HK_A`,
    /// `NHKr = NHK_B`. Draws 32 bytes from `rng` for her first ratchet key.
    pub(crate) fn initiator<R: CryptoRng + ?Sized>(
        keys: &HandshakeKeys,
        their_signed_prekey: &X25519PublicKey,
        rng: &mut R,
    ) -> Result<Self, DecryptionError> {
        let (secret, public) = generate_x25519(rng);
        let (root, sending, next_sending_header) =
            RootKey(*keys.shared_secret).step(&*dh(&secret, their_signed_prekey)?);
        Ok(Self {
            root,
            ours: RatchetKeyPair { secret, public },
            sending: Some(sending),
            sending_header: Some(HeaderKey(*keys.initiator_header_key)),
            next_sending_header,
            previous_sending_length: 0,
            receiving: None,
            next_receiving_header: HeaderKey(*keys.responder_header_key),
            retired: VecDeque::new(),
            skipped: SkippedKeys::default(),
        })
    }

    /// Bob's state before the first message: `RK = SK`, his ratchet key is his signed prekey,
    /// `NHKs = NHK_B`, `NHKr = HK_A`.
    pub(crate) fn responder(keys: &HandshakeKeys, signed_prekey: RatchetKeyPair) -> Self {
        Self {
            root: RootKey(*keys.shared_secret),
            ours: signed_prekey,
            sending: None,
            sending_header: None,
            next_sending_header: HeaderKey(*keys.responder_header_key),
            previous_sending_length: 0,
            receiving: None,
            next_receiving_header: HeaderKey(*keys.initiator_header_key),
            retired: VecDeque::new(),
            skipped: SkippedKeys::default(),
        }
    }

    /// Encrypts under the next sending message key, encrypts the header under the sending
    /// header key, and advances the sending chain. Returns the message and the keys used (for
    /// test-vector traces).
    pub(crate) fn encrypt(
        &mut self,
        session_ad: &[u8],
        plaintext: &[u8],
    ) -> Result<(RatchetMessage, MessageKey, HeaderKey), EncryptionError> {
        let (Some(chain), Some(header_key)) = (&self.sending, &self.sending_header) else {
            return Err(EncryptionError::NoSendingChain);
        };
        let index = u32::try_from(chain.index).map_err(|_| EncryptionError::ChainExhausted)?;
        let header = MessageHeader {
            ratchet_key: self.ours.public,
            previous_chain_length: self.previous_sending_length,
            index,
        };
        let key = chain.message_key();
        let ciphertext = key.encrypt(&message_ad(session_ad, &header), plaintext);
        let encrypted_header = header_key.seal(session_ad, &header.to_plaintext(), &ciphertext);
        let header_key = header_key.clone();
        self.sending = Some(chain.next());
        Ok((
            RatchetMessage {
                encrypted_header,
                ciphertext,
            },
            key,
            header_key,
        ))
    }

    /// Finds the header key that opens `message`'s header, trying in order: the current
    /// receiving chain's, the retired chains' (newest first), the next chain's. At most
    /// [`MAX_HEADER_KEYS_TRIED`] tries; `AuthenticationFailed` if none opens it.
    fn open_header(
        &self,
        session_ad: &[u8],
        message: &RatchetMessage,
    ) -> Result<(MessageHeader, HeaderMatch), DecryptionError> {
        let open =
            |key: &HeaderKey| key.open(session_ad, &message.encrypted_header, &message.ciphertext);
        let found = self
            .receiving
            .as_ref()
            .and_then(|r| open(&r.header_key))
            .map(|h| (h, HeaderMatch::Current))
            .or_else(|| {
                self.retired
                    .iter()
                    .rev()
                    .find_map(|r| open(&r.header_key))
                    .map(|h| (h, HeaderMatch::Retired))
            })
            .or_else(|| open(&self.next_receiving_header).map(|h| (h, HeaderMatch::Next)));
        let (plaintext, which) = found.ok_or(DecryptionError::AuthenticationFailed)?;
        // A header that authenticated came from the peer, who never sends an invalid key; the
        // check keeps decoding total all the same.
        let header = MessageHeader::from_plaintext(&plaintext)
            .map_err(|_| DecryptionError::AuthenticationFailed)?;
        Ok((header, which))
    }

    /// Decrypts, committing state changes only if the message authenticates. Returns the
    /// plaintext and the decrypted header.
    pub(crate) fn decrypt<R: CryptoRng + ?Sized>(
        &mut self,
        session_ad: &[u8],
        message: &RatchetMessage,
        rng: &mut R,
    ) -> Result<(Vec<u8>, MessageHeader), DecryptionError> {
        let (header, which) = self.open_header(session_ad, message)?;
        let ad = message_ad(session_ad, &header);
        let open = |key: &MessageKey| {
            key.decrypt(&ad, &message.ciphertext)
                .ok_or(DecryptionError::AuthenticationFailed)
        };
        let duplicate = DecryptionError::DuplicateMessage {
            chain: header.ratchet_key,
            index: header.index,
        };

        match which {
            HeaderMatch::Current => {
                let Some(receiving) = &mut self.receiving else {
                    return Err(DecryptionError::AuthenticationFailed);
                };
                if receiving.ratchet_key != header.ratchet_key {
                    // Only the peer holds the header key, and it never changes its ratchet key
                    // within a chain.
                    return Err(DecryptionError::AuthenticationFailed);
                }
                // 1. The peer's current chain, this message or one after the next expected.
                if u64::from(header.index) >= receiving.chain.index {
                    let walk = advance(&receiving.chain, &header)?;
                    let plaintext = open(&walk.key)?;
                    receiving.chain = walk.next;
                    self.skipped
                        .extend(&header.ratchet_key, walk.kept, walk.given_up);
                    return Ok((plaintext, header));
                }
                // 2./3. An earlier message of the current chain: a kept key, or a replay.
                match self.open_skipped(&header, open) {
                    Some(result) => result.map(|p| (p, header)),
                    None => Err(duplicate),
                }
            }
            HeaderMatch::Retired => match self.open_skipped(&header, open) {
                Some(result) => result.map(|p| (p, header)),
                None => Err(duplicate),
            },
            HeaderMatch::Next => {
                // A known ratchet key under the next chain's header key never comes from an
                // honest peer.
                let known = self.receiving.as_ref().map(|r| r.ratchet_key);
                if known == Some(header.ratchet_key)
                    || self
                        .retired
                        .iter()
                        .any(|r| r.ratchet_key == header.ratchet_key)
                {
                    return Err(duplicate);
                }
                // 4. A new chain: DH ratchet step.
                let finished = match &self.receiving {
                    Some(r) => finish(&r.chain, header.previous_chain_length)?,
                    None => (Vec::new(), 0),
                };
                let (root, receiving_chain, next_receiving_header) = self
                    .root
                    .step(&*dh(&self.ours.secret, &header.ratchet_key)?);
                let walk = advance(&receiving_chain, &header)?;
                let plaintext = open(&walk.key)?;

                let step = self.plan_sending_step(&root, &header.ratchet_key, rng)?;
                self.commit_step(step, &header, finished, walk, next_receiving_header);
                Ok((plaintext, header))
            }
        }
    }

    /// Step 2 of §5.3: a message that arrived late, whose key was kept when later ones arrived
    /// first. `Some(Err)` if the kept key does not authenticate it (the key stays), `None` if
    /// no key is kept for it.
    fn open_skipped(
        &mut self,
        header: &MessageHeader,
        open: impl Fn(&MessageKey) -> Result<Vec<u8>, DecryptionError>,
    ) -> Option<Result<Vec<u8>, DecryptionError>> {
        let position = self.skipped.position(&header.ratchet_key, header.index)?;
        let plaintext = match self.skipped.get(position).map(&open)? {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        self.skipped.remove(position);
        self.prune_retired();
        Some(Ok(plaintext))
    }

    /// Keeps the last [`RETIRED_CHAINS`] retired chains, and any older one that still has
    /// skipped keys (whose header key is needed to open its late messages).
    fn prune_retired(&mut self) {
        let keep_from = self.retired.len().saturating_sub(RETIRED_CHAINS);
        let skipped = &self.skipped;
        let mut index = 0;
        self.retired.retain(|r| {
            let keep = index >= keep_from || skipped.has_chain(&r.ratchet_key);
            index += 1;
            keep
        });
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
        let (root, sending, next_sending_header) = root.step(&*dh(&secret, their_key)?);
        Ok(RatchetStep {
            root,
            ours: RatchetKeyPair { secret, public },
            sending,
            next_sending_header,
        })
    }

    /// Commits a DH ratchet step (§5.3 step 4.7): the old receiving chain retires with its
    /// header key, `HKs = NHKs`, `HKr = NHKr`, and the step's new next header keys.
    fn commit_step(
        &mut self,
        step: RatchetStep,
        header: &MessageHeader,
        (finished, finished_given_up): (Vec<MessageKey>, u64),
        walk: Walk,
        next_receiving_header: HeaderKey,
    ) {
        if let Some(old) = self.receiving.take() {
            self.skipped
                .extend(&old.ratchet_key, finished, finished_given_up);
            self.retired.push_back(RetiredChain {
                ratchet_key: old.ratchet_key,
                header_key: old.header_key,
            });
        }
        self.skipped
            .extend(&header.ratchet_key, walk.kept, walk.given_up);
        self.prune_retired();
        self.previous_sending_length = self
            .sending
            .as_ref()
            .map_or(0, |c| u32::try_from(c.index).unwrap_or(u32::MAX));
        self.root = step.root;
        self.ours = step.ours;
        self.sending = Some(step.sending);
        self.sending_header = Some(core::mem::replace(
            &mut self.next_sending_header,
            step.next_sending_header,
        ));
        self.receiving = Some(ReceivingChain {
            ratchet_key: header.ratchet_key,
            header_key: core::mem::replace(&mut self.next_receiving_header, next_receiving_header),
            chain: walk.next,
        });
    }

    /// Missing messages of the peer's chains, oldest chain first.
    pub(crate) fn gaps(&self) -> Vec<Gap> {
        self.skipped.gaps()
    }
}
