//! The bodies of the clinic queue's relay frames (`docs/conversations.md` §5), their type bytes
//! and error codes. A frame is `version[1]=1 ‖ type[1] ‖ request_id[4] ‖ body` exactly as in
//! `crate::relay`; [`QueueFrame::to_frame`] and [`QueueFrame::from_frame`] write and read that
//! whole frame. The relay's `crate::relay::FrameBody::Queue` carries them, and the relay's
//! `ErrorCode` 20–24 are these [`QueueError`]s (`From<QueueError>`).

use core::fmt;

use super::archive::{ArchiveEnvelope, ArchivePolicy};
use super::membership::MembershipChange;
use crate::audit::ConversationId;
use crate::codec::{Codec, DecodeError, Reader, put_bytes_u32};
use crate::labels::PROTOCOL_VERSION;
use crate::relay::{DeviceAddress, OutgoingEnvelope, put_envelopes, read_envelopes};

/// Most entries in one `Queue` answer.
pub const MAX_QUEUE_ENTRIES: usize = 256;
/// Most changes in one `Membership` answer (a client asks again from the next epoch).
pub const MAX_CHANGES_PER_FRAME: usize = 64;
/// Most note envelopes in one `HandOff` (one per on-duty staff device).
pub const MAX_NOTE_ENVELOPES: usize = 64;
/// Largest note envelope: a session message carrying a one-line note, prekey header included.
pub const MAX_NOTE_ENVELOPE_LEN: usize = 4096;
/// Most device addresses in one `OnDuty` answer.
pub const MAX_ON_DUTY_DEVICES: usize = 256;
/// Most archive items in one `ArchiveItems` answer (16 × at most 65 706 bytes, 1 051 296 bytes,
/// fits a frame).
pub const MAX_ARCHIVE_ITEMS: usize = 16;
/// Largest archive envelope: its header, the length prefix and the largest ciphertext.
pub const MAX_ARCHIVE_ENVELOPE_LEN: usize =
    super::ARCHIVE_ENVELOPE_HEADER_LEN + 4 + super::MAX_ARCHIVE_CIPHERTEXT_LEN;
/// Largest queue frame: the relay's frame limit (`crate::relay::MAX_FRAME_LEN`, 1.5 MiB).
pub const MAX_QUEUE_FRAME_LEN: usize = crate::relay::MAX_FRAME_LEN;

/// The relay's error codes for queue frames, after the existing 1–19
/// (`docs/relay-protocol.md` §6). Carried in the relay's `Error` frame (`0x82`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// 20: `OpenConversation` with an id already in use.
    ConversationExists,
    /// 21: the conversation is unknown to the relay.
    UnknownConversation,
    /// 22: the requesting device is not a member (a hand-off by an agent not on it, a fetch by
    /// a stranger).
    NotOnConversation,
    /// 23: the relay's own check of the membership change failed (`conversations.md` §4.3);
    /// the client recomputes the precise rule.
    MembershipRefused,
    /// 24: the change's epoch is not the relay's next one: another change came first. Fetch
    /// the history and try again.
    StaleEpoch,
}

impl QueueError {
    /// The code.
    pub const fn code(self) -> u16 {
        match self {
            Self::ConversationExists => 20,
            Self::UnknownConversation => 21,
            Self::NotOnConversation => 22,
            Self::MembershipRefused => 23,
            Self::StaleEpoch => 24,
        }
    }

    /// From a code; `None` for any other.
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            20 => Some(Self::ConversationExists),
            21 => Some(Self::UnknownConversation),
            22 => Some(Self::NotOnConversation),
            23 => Some(Self::MembershipRefused),
            24 => Some(Self::StaleEpoch),
            _ => None,
        }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ConversationExists => "a conversation with this id already exists",
            Self::UnknownConversation => "the relay knows no such conversation",
            Self::NotOnConversation => "this device is not in the conversation",
            Self::MembershipRefused => "the relay refused the membership change",
            Self::StaleEpoch => "another membership change came first; fetch and try again",
        })
    }
}

/// Where a conversation stands in the queue, one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// `0x01`: opened by the patient, never claimed.
    New,
    /// `0x02`: handed back to the queue by an agent.
    HandedBack,
    /// `0x03`: claimed: it left the queue (only in `QueueChanged`).
    Claimed,
    /// `0x04`: closed (the patient left): it left the queue (only in `QueueChanged`).
    Closed,
}

impl QueueState {
    fn to_u8(self) -> u8 {
        match self {
            Self::New => 0x01,
            Self::HandedBack => 0x02,
            Self::Claimed => 0x03,
            Self::Closed => 0x04,
        }
    }

    fn from_u8(b: u8) -> Result<Self, DecodeError> {
        match b {
            0x01 => Ok(Self::New),
            0x02 => Ok(Self::HandedBack),
            0x03 => Ok(Self::Claimed),
            0x04 => Ok(Self::Closed),
            _ => Err(DecodeError::InvalidValue {
                field: "queue state",
            }),
        }
    }
}

/// One conversation in the queue: `conversation_id[16] ‖ state[1] ‖ opened_at[8] ‖
/// waiting_since[8] ‖ epoch[8]` (41 bytes; times in Unix seconds, relay clock; `epoch` is the
/// next epoch, which a claim must carry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    /// The conversation.
    pub conversation: ConversationId,
    /// Its state.
    pub state: QueueState,
    /// When the patient opened it.
    pub opened_at: u64,
    /// Since when it waits (opening or hand-back).
    pub waiting_since: u64,
    /// The epoch its next membership change must carry.
    pub epoch: u64,
}

impl QueueEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.conversation.0);
        out.push(self.state.to_u8());
        out.extend_from_slice(&self.opened_at.to_be_bytes());
        out.extend_from_slice(&self.waiting_since.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            conversation: ConversationId::read(r)?,
            state: QueueState::from_u8(r.u8("queue state")?)?,
            opened_at: r.u64("opened at")?,
            waiting_since: r.u64("waiting since")?,
            epoch: r.u64("epoch")?,
        })
    }
}

/// One archived envelope as the relay returns it in `ArchiveItems` (`conversations.md` §5.2,
/// §7.3): `filer[36] ‖ filed_at_ms[8] ‖ len[4] ‖ envelope` (48 bytes and the envelope, at most
/// 48 + [`MAX_ARCHIVE_ENVELOPE_LEN`] = 65 706 bytes). `filer` and `filed_at_ms` are the relay's
/// word, not signed by anyone: the archive reader checks the filer against the verified
/// membership at the epoch sealed inside the envelope, and flags a message whose filer was not a
/// member device that writes at that epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveItem {
    /// The authenticated device that filed the envelope with `PutArchive` (its connection's
    /// identity fingerprint and device number).
    pub filer: DeviceAddress,
    /// When the relay stored it: Unix milliseconds, relay clock.
    pub filed_at_ms: u64,
    /// The envelope as filed (§7.2).
    pub envelope: ArchiveEnvelope,
}

impl ArchiveItem {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.filer.fingerprint);
        out.extend_from_slice(&self.filer.device_id.to_be_bytes());
        out.extend_from_slice(&self.filed_at_ms.to_be_bytes());
        put_bytes_u32(out, &self.envelope.to_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let filer = DeviceAddress {
            fingerprint: r.array("archive filer fingerprint")?,
            device_id: r.u32("archive filer device id")?,
        };
        let filed_at_ms = r.u64("archive filed at")?;
        let bytes = r.bytes_u32(MAX_ARCHIVE_ENVELOPE_LEN, "archive item")?;
        Ok(Self {
            filer,
            filed_at_ms,
            envelope: ArchiveEnvelope::from_bytes(bytes)?,
        })
    }
}

/// A note envelope: `address[36] ‖ len[4] ‖ session message[≤ 4096]`, a session message to one
/// staff device carrying the hand-off note. Opaque to the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteEnvelope {
    /// The staff device.
    pub recipient: DeviceAddress,
    /// The ciphertext.
    pub payload: Vec<u8>,
}

/// A queue frame's body (`conversations.md` §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueFrame {
    /// `0x12`, patient: open a conversation with the clinic: its epoch-0 change.
    OpenConversation(Box<MembershipChange>),
    /// `0x13`, staff: `on_duty[1]` (0 or 1): whether to receive `QueueChanged`.
    SetOnDuty(bool),
    /// `0x14`, agent: list the waiting conversations (empty body).
    FetchQueue,
    /// `0x15`, agent: claim a conversation with a change adding the agent's devices as agent.
    Claim(Box<MembershipChange>),
    /// `0x16`, agent on the conversation: `count[1] ‖ change × count ‖ notes`: hand off to a
    /// named agent (add them, then remove oneself: two changes) or back to the queue (remove
    /// oneself: one change), with the note sealed to staff devices only.
    HandOff {
        /// One or two changes, applied atomically.
        changes: Vec<MembershipChange>,
        /// `count[2] ‖ note envelope × count`.
        notes: Vec<NoteEnvelope>,
    },
    /// `0x17`, member or joining supervisor: any other change (a patient's new device, a
    /// supervisor joining read-only or leaving, an agent adding a supervisor).
    PublishChange(Box<MembershipChange>),
    /// `0x18`: `conversation_id[16] ‖ from_epoch[8]`: the history from an epoch. For a member
    /// device, a device of the patient's identity, a supervisor of the clinic, or an agent of the
    /// clinic while the conversation waits in the queue (new or handed back, to build a claim on
    /// the head); anyone else gets `NotOnConversation` (§5.2, §5.4).
    FetchMembership {
        /// The conversation.
        conversation: ConversationId,
        /// The first epoch wanted.
        from_epoch: u64,
    },
    /// `0x19`, member (not a read-only supervisor): `envelope`: file one message's archive
    /// envelope (§7.3) for the clinic.
    PutArchive(Box<ArchiveEnvelope>),
    /// `0x1a`, supervisor: `conversation_id[16] ‖ from_index[8]`: the archived envelopes of a
    /// conversation from a position.
    FetchArchive {
        /// The conversation.
        conversation: ConversationId,
        /// The first position wanted (0 for the beginning).
        from_index: u64,
    },
    /// `0x1b`, anyone logged in (empty body): the clinic's current archive policy.
    FetchArchivePolicy,
    /// `0x1c`, admin: `policy`: publish a new archive policy (a higher sequence).
    PublishArchivePolicy(Box<ArchivePolicy>),
    /// `0x1d`, agent (empty body): the devices of the agents on duty, to seal a hand-off note to
    /// when handing a conversation back to the queue.
    FetchOnDuty,
    /// `0x1e`, member that writes: `conversation_id[16] ‖ epoch[8] ‖ count[2] ‖ (address[36] ‖
    /// len[4] ‖ session message)*` (at most 16 envelopes of at most 96 KiB, as `Send`): one
    /// conversation message fanned out to member devices (§2), at the membership epoch the
    /// sender verified. The relay answers `Sent` (`0x84`) like `Send`, or `StaleEpoch` (24) if
    /// its head epoch is another (the sender fetches the history and re-encrypts for the
    /// current members), `NotOnConversation` (22) if the sender or a recipient is not a member
    /// at the head, `UnknownConversation` (21). A conversation of more than 17 devices needs
    /// several frames, each checked on its own.
    ConversationSend {
        /// The conversation.
        conversation: ConversationId,
        /// The membership epoch the sender encrypted for: the number of changes it applied.
        epoch: u64,
        /// One session message per recipient device.
        envelopes: Vec<OutgoingEnvelope>,
    },
    /// `0x8d`, relay: `count[2] ‖ entry × count` answering `FetchQueue`, oldest first.
    Queue(Vec<QueueEntry>),
    /// `0x8e`, relay: `conversation_id[16] ‖ epoch[8]`: the claim won; `epoch` is the claim's.
    Claimed {
        /// The conversation.
        conversation: ConversationId,
        /// The claim's epoch.
        epoch: u64,
    },
    /// `0x8f`, relay: `conversation_id[16] ‖ epoch[8]`: another agent claimed first; `epoch`
    /// is the relay's next epoch.
    AlreadyClaimed {
        /// The conversation.
        conversation: ConversationId,
        /// The relay's next epoch.
        epoch: u64,
    },
    /// `0x90`, relay: `count[1] ‖ change × count` answering `FetchMembership`, in epoch order.
    Membership(Vec<MembershipChange>),
    /// `0x91`, relay, pushed to every member device: a change the relay accepted.
    MembershipChanged(Box<MembershipChange>),
    /// `0x92`, relay, pushed to on-duty agents: a queue entry appeared, changed or left.
    QueueChanged(QueueEntry),
    /// `0x93`, relay: `next_index[8] ‖ count[1] ‖ (filer[36] ‖ filed_at_ms[8] ‖ len[4] ‖
    /// envelope) × count` answering `FetchArchive` (at most [`MAX_ARCHIVE_ITEMS`]; `next_index`
    /// is where to ask next). Each item carries the device that filed it and when
    /// ([`ArchiveItem`]).
    ArchiveItems {
        /// The position after the last envelope returned.
        next_index: u64,
        /// The envelopes with their filer and time, in the order the relay filed them.
        items: Vec<ArchiveItem>,
    },
    /// `0x94`, relay: `has_policy[1] ‖ policy?` answering `FetchArchivePolicy`.
    ArchivePolicy(Option<Box<ArchivePolicy>>),
    /// `0x95`, relay: `count[2] ‖ device address[36] × count` (at most
    /// [`MAX_ON_DUTY_DEVICES`]) answering `FetchOnDuty`.
    OnDuty(Vec<DeviceAddress>),
}

fn read_change(r: &mut Reader<'_>) -> Result<Box<MembershipChange>, DecodeError> {
    Ok(Box::new(MembershipChange::read(r)?))
}

impl QueueFrame {
    /// The frame's type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            Self::OpenConversation(_) => 0x12,
            Self::SetOnDuty(_) => 0x13,
            Self::FetchQueue => 0x14,
            Self::Claim(_) => 0x15,
            Self::HandOff { .. } => 0x16,
            Self::PublishChange(_) => 0x17,
            Self::FetchMembership { .. } => 0x18,
            Self::Queue(_) => 0x8d,
            Self::Claimed { .. } => 0x8e,
            Self::AlreadyClaimed { .. } => 0x8f,
            Self::Membership(_) => 0x90,
            Self::MembershipChanged(_) => 0x91,
            Self::QueueChanged(_) => 0x92,
            Self::PutArchive(_) => 0x19,
            Self::FetchArchive { .. } => 0x1a,
            Self::FetchArchivePolicy => 0x1b,
            Self::PublishArchivePolicy(_) => 0x1c,
            Self::ArchiveItems { .. } => 0x93,
            Self::ArchivePolicy(_) => 0x94,
            Self::FetchOnDuty => 0x1d,
            Self::ConversationSend { .. } => 0x1e,
            Self::OnDuty(_) => 0x95,
        }
    }

    /// Whether `type_byte` names a queue frame.
    pub fn is_queue_type(type_byte: u8) -> bool {
        matches!(type_byte, 0x12..=0x1e | 0x8d..=0x95)
    }

    /// Appends the body.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::OpenConversation(c)
            | Self::Claim(c)
            | Self::PublishChange(c)
            | Self::MembershipChanged(c) => c.encode(out),
            Self::SetOnDuty(on) => out.push(u8::from(*on)),
            Self::FetchQueue => {}
            Self::HandOff { changes, notes } => {
                out.push(u8::try_from(changes.len()).unwrap_or(u8::MAX));
                for c in changes {
                    c.encode(out);
                }
                out.extend_from_slice(
                    &u16::try_from(notes.len()).unwrap_or(u16::MAX).to_be_bytes(),
                );
                for n in notes {
                    out.extend_from_slice(&n.recipient.fingerprint);
                    out.extend_from_slice(&n.recipient.device_id.to_be_bytes());
                    put_bytes_u32(out, &n.payload);
                }
            }
            Self::FetchMembership {
                conversation,
                from_epoch,
            } => {
                out.extend_from_slice(&conversation.0);
                out.extend_from_slice(&from_epoch.to_be_bytes());
            }
            Self::Queue(entries) => {
                out.extend_from_slice(
                    &u16::try_from(entries.len())
                        .unwrap_or(u16::MAX)
                        .to_be_bytes(),
                );
                for e in entries {
                    e.encode(out);
                }
            }
            Self::Claimed {
                conversation,
                epoch,
            }
            | Self::AlreadyClaimed {
                conversation,
                epoch,
            } => {
                out.extend_from_slice(&conversation.0);
                out.extend_from_slice(&epoch.to_be_bytes());
            }
            Self::Membership(changes) => {
                out.push(u8::try_from(changes.len()).unwrap_or(u8::MAX));
                for c in changes {
                    c.encode(out);
                }
            }
            Self::QueueChanged(entry) => entry.encode(out),
            Self::PutArchive(envelope) => envelope.encode(out),
            Self::FetchArchive {
                conversation,
                from_index,
            } => {
                out.extend_from_slice(&conversation.0);
                out.extend_from_slice(&from_index.to_be_bytes());
            }
            Self::FetchArchivePolicy => {}
            Self::PublishArchivePolicy(policy) => policy.encode(out),
            Self::ArchiveItems { next_index, items } => {
                out.extend_from_slice(&next_index.to_be_bytes());
                out.push(u8::try_from(items.len()).unwrap_or(u8::MAX));
                for item in items {
                    item.encode(out);
                }
            }
            Self::ArchivePolicy(policy) => match policy {
                Some(p) => {
                    out.push(1);
                    p.encode(out);
                }
                None => out.push(0),
            },
            Self::FetchOnDuty => {}
            Self::ConversationSend {
                conversation,
                epoch,
                envelopes,
            } => {
                out.extend_from_slice(&conversation.0);
                out.extend_from_slice(&epoch.to_be_bytes());
                put_envelopes(out, envelopes);
            }
            Self::OnDuty(devices) => {
                out.extend_from_slice(
                    &u16::try_from(devices.len())
                        .unwrap_or(u16::MAX)
                        .to_be_bytes(),
                );
                for d in devices {
                    out.extend_from_slice(&d.fingerprint);
                    out.extend_from_slice(&d.device_id.to_be_bytes());
                }
            }
        }
    }

    /// Reads the body of a frame of type `type_byte` (the whole rest of `r`'s input must be
    /// checked by the caller with `expect_empty`).
    ///
    /// # Errors
    /// `UnknownType` for a type that is not a queue frame; the body's own errors.
    pub fn read_body(type_byte: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match type_byte {
            0x12 => Self::OpenConversation(read_change(r)?),
            0x13 => Self::SetOnDuty(r.flag("on duty")?),
            0x14 => Self::FetchQueue,
            0x15 => Self::Claim(read_change(r)?),
            0x16 => {
                let count = usize::from(r.u8("hand-off change count")?);
                if !(1..=2).contains(&count) {
                    return Err(DecodeError::InvalidValue {
                        field: "hand-off change count",
                    });
                }
                let mut changes = Vec::with_capacity(count);
                for _ in 0..count {
                    changes.push(MembershipChange::read(r)?);
                }
                let notes_count = usize::from(r.u16("note count")?);
                if notes_count > MAX_NOTE_ENVELOPES {
                    return Err(DecodeError::TooLong {
                        field: "note envelopes",
                        len: notes_count,
                        max: MAX_NOTE_ENVELOPES,
                    });
                }
                let mut notes = Vec::with_capacity(notes_count);
                for _ in 0..notes_count {
                    let recipient = DeviceAddress {
                        fingerprint: r.array("fingerprint")?,
                        device_id: r.u32("device id")?,
                    };
                    let payload = r
                        .bytes_u32(MAX_NOTE_ENVELOPE_LEN, "note envelope")?
                        .to_vec();
                    notes.push(NoteEnvelope { recipient, payload });
                }
                Self::HandOff { changes, notes }
            }
            0x17 => Self::PublishChange(read_change(r)?),
            0x18 => Self::FetchMembership {
                conversation: ConversationId::read(r)?,
                from_epoch: r.u64("from epoch")?,
            },
            0x8d => {
                let count = usize::from(r.u16("queue entry count")?);
                if count > MAX_QUEUE_ENTRIES {
                    return Err(DecodeError::TooLong {
                        field: "queue entries",
                        len: count,
                        max: MAX_QUEUE_ENTRIES,
                    });
                }
                // 41 bytes an entry: refuse a count the input cannot hold before allocating.
                if r.left() < count.saturating_mul(41) {
                    return Err(DecodeError::Truncated {
                        field: "queue entries",
                    });
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push(QueueEntry::read(r)?);
                }
                Self::Queue(entries)
            }
            0x8e => Self::Claimed {
                conversation: ConversationId::read(r)?,
                epoch: r.u64("epoch")?,
            },
            0x8f => Self::AlreadyClaimed {
                conversation: ConversationId::read(r)?,
                epoch: r.u64("epoch")?,
            },
            0x90 => {
                let count = usize::from(r.u8("change count")?);
                if count > MAX_CHANGES_PER_FRAME {
                    return Err(DecodeError::TooLong {
                        field: "membership changes",
                        len: count,
                        max: MAX_CHANGES_PER_FRAME,
                    });
                }
                let mut changes = Vec::with_capacity(count);
                for _ in 0..count {
                    changes.push(MembershipChange::read(r)?);
                }
                Self::Membership(changes)
            }
            0x91 => Self::MembershipChanged(read_change(r)?),
            0x92 => Self::QueueChanged(QueueEntry::read(r)?),
            0x1d => Self::FetchOnDuty,
            0x1e => Self::ConversationSend {
                conversation: ConversationId::read(r)?,
                epoch: r.u64("epoch")?,
                envelopes: read_envelopes(r)?,
            },
            0x95 => {
                let count = usize::from(r.u16("on-duty device count")?);
                if count > MAX_ON_DUTY_DEVICES {
                    return Err(DecodeError::TooLong {
                        field: "on-duty devices",
                        len: count,
                        max: MAX_ON_DUTY_DEVICES,
                    });
                }
                // 36 bytes an address: refuse a count the input cannot hold before allocating.
                if r.left() < count.saturating_mul(36) {
                    return Err(DecodeError::Truncated {
                        field: "on-duty devices",
                    });
                }
                let mut devices = Vec::with_capacity(count);
                for _ in 0..count {
                    devices.push(DeviceAddress {
                        fingerprint: r.array("fingerprint")?,
                        device_id: r.u32("device id")?,
                    });
                }
                Self::OnDuty(devices)
            }
            0x19 => Self::PutArchive(Box::new(ArchiveEnvelope::read(r)?)),
            0x1a => Self::FetchArchive {
                conversation: ConversationId::read(r)?,
                from_index: r.u64("from index")?,
            },
            0x1b => Self::FetchArchivePolicy,
            0x1c => Self::PublishArchivePolicy(Box::new(ArchivePolicy::read(r)?)),
            0x93 => {
                let next_index = r.u64("next index")?;
                let count = usize::from(r.u8("archive item count")?);
                if count > MAX_ARCHIVE_ITEMS {
                    return Err(DecodeError::TooLong {
                        field: "archive items",
                        len: count,
                        max: MAX_ARCHIVE_ITEMS,
                    });
                }
                // At least 48 bytes an item (filer, time, length): refuse a count the input
                // cannot hold before allocating.
                if r.left() < count.saturating_mul(48) {
                    return Err(DecodeError::Truncated {
                        field: "archive items",
                    });
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(ArchiveItem::read(r)?);
                }
                Self::ArchiveItems { next_index, items }
            }
            0x94 => Self::ArchivePolicy(if r.flag("has archive policy")? {
                Some(Box::new(ArchivePolicy::read(r)?))
            } else {
                None
            }),
            tag => {
                return Err(DecodeError::UnknownType {
                    structure: "queue frame",
                    tag,
                });
            }
        })
    }

    /// The whole frame: `0x01 ‖ type ‖ request_id[4] ‖ body`.
    pub fn to_frame(&self, request_id: u32) -> Vec<u8> {
        let mut out = vec![PROTOCOL_VERSION, self.type_byte()];
        out.extend_from_slice(&request_id.to_be_bytes());
        self.encode_body(&mut out);
        out
    }

    /// Decodes a whole frame, refusing more than [`MAX_QUEUE_FRAME_LEN`] bytes and trailing
    /// bytes.
    ///
    /// # Errors
    /// `TooLong`, `UnsupportedVersion`, `UnknownType`, or the body's errors.
    pub fn from_frame(bytes: &[u8]) -> Result<(u32, Self), DecodeError> {
        if bytes.len() > MAX_QUEUE_FRAME_LEN {
            return Err(DecodeError::TooLong {
                field: "queue frame",
                len: bytes.len(),
                max: MAX_QUEUE_FRAME_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let type_byte = r.u8("type")?;
        let request_id = r.u32("request id")?;
        let body = Self::read_body(type_byte, &mut r)?;
        r.expect_empty("queue frame")?;
        Ok((request_id, body))
    }
}
