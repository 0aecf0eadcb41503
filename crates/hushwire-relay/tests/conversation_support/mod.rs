//! What the conversation tests share (`conversations.rs`, `conversations_attacks.rs`): a clinic
//! with its organization key, peers that register and collect pushes, and a membership history
//! that signs valid changes (`docs/conversations.md` §4.2).

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{self, Client, Device, Engine, RelayProcess, connect, next_frame};
use ed25519_dalek::SigningKey;
use hushwire_proto::X25519PublicKey;
use hushwire_proto::audit::ConversationId;
use hushwire_proto::clinic::{AgentCertificate, ClinicLink, DeviceList, OrgKey, Role, Roles};
use hushwire_proto::conversation::queue::{QueueFrame, QueueState};
use hushwire_proto::conversation::{
    ArchiveEnvelope, ChangeAction, ChangeProposal, MemberRole, MembershipChange, genesis_hash,
};
use hushwire_proto::relay::{Delivery, ErrorCode, FrameBody, OutgoingEnvelope};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The test's clock in Unix milliseconds (the relay's runs on the same machine).
pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

pub fn error(code: ErrorCode) -> FrameBody {
    FrameBody::Error {
        code,
        retry_after_ms: 0,
    }
}

pub fn q(frame: QueueFrame) -> FrameBody {
    FrameBody::Queue(Box::new(frame))
}

pub struct Clinic {
    pub org: SigningKey,
    pub link: ClinicLink,
}

impl Clinic {
    pub fn new() -> Self {
        let org = SigningKey::from_bytes(&[0xc1; 32]);
        let link = ClinicLink::issue(&org, "Riverside Clinic", "wss://relay.example").unwrap();
        Self { org, link }
    }

    pub fn org_key(&self) -> OrgKey {
        *self.link.org()
    }

    pub fn certify(&self, serial: u64, device: &Device, roles: &[Role]) -> AgentCertificate {
        AgentCertificate::issue(
            &self.org,
            serial,
            device.identity.clone(),
            "Dr. Ada Okafor",
            Roles::of(roles).unwrap(),
            now() - 60,
            now() + 3600,
        )
        .unwrap()
    }

    pub fn start(&self, engine: &Engine, name: &str) -> Vec<RelayProcess> {
        let link = self.link.to_string();
        engine.start(name, &["--clinic-link", link.as_str()])
    }
}

/// A connected device that keeps what the relay pushes (request id 0) and delivers.
pub struct Peer {
    pub c: Client,
    pub pushes: Vec<QueueFrame>,
    pub deliveries: Vec<Delivery>,
}

impl Peer {
    pub async fn register(
        url: &str,
        device: &Device,
        certificate: Option<&AgentCertificate>,
    ) -> Self {
        let mut c = connect(url).await;
        let credentials = device.credentials(&c.challenge);
        let answer = c
            .call(FrameBody::Register {
                credentials,
                invite: None,
                certificate: certificate.map(|c| Box::new(c.clone())),
            })
            .await;
        assert_eq!(answer, FrameBody::Ok, "registration refused");
        Self {
            c,
            pushes: Vec::new(),
            deliveries: Vec::new(),
        }
    }

    pub async fn call(&mut self, body: FrameBody) -> FrameBody {
        let id = self.c.request(body).await;
        loop {
            let frame = next_frame(&mut self.c.socket).await.expect("an answer");
            match frame.body {
                FrameBody::Deliver(d) => self.deliveries.push(d),
                FrameBody::Queue(push) if frame.request_id == 0 => self.pushes.push(*push),
                FrameBody::PreKeyCount { .. } if frame.request_id == 0 => {}
                body if frame.request_id == id => return body,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Reads frames until `want` holds for what was collected (10 s per frame at most).
    pub async fn wait_for(&mut self, what: &str, want: impl Fn(&Self) -> bool) {
        while !want(self) {
            let frame = next_frame(&mut self.c.socket)
                .await
                .unwrap_or_else(|| panic!("no frame while waiting for {what}"));
            match frame.body {
                FrameBody::Deliver(d) => self.deliveries.push(d),
                FrameBody::Queue(push) if frame.request_id == 0 => self.pushes.push(*push),
                _ => {}
            }
        }
    }

    pub fn membership_pushes(&self, conversation: ConversationId) -> Vec<u64> {
        self.pushes
            .iter()
            .filter_map(|p| match p {
                QueueFrame::MembershipChanged(c) if c.conversation() == conversation => {
                    Some(c.epoch())
                }
                _ => None,
            })
            .collect()
    }

    pub fn queue_pushes(&self, conversation: ConversationId) -> Vec<QueueState> {
        self.pushes
            .iter()
            .filter_map(|p| match p {
                QueueFrame::QueueChanged(e) if e.conversation == conversation => Some(e.state),
                _ => None,
            })
            .collect()
    }
}

/// A conversation's history as the test's clients see it.
pub struct History {
    pub conversation: ConversationId,
    pub head: [u8; 32],
    pub epoch: u64,
}

impl History {
    pub fn new(clinic: &Clinic, n: u8) -> Self {
        let mut id = [n; 16];
        id[..8].copy_from_slice(&common::rand_u64().to_be_bytes());
        let conversation = ConversationId(id);
        Self {
            conversation,
            head: genesis_hash(&conversation, &clinic.org_key()),
            epoch: 0,
        }
    }

    /// A change at the next epoch (not applied: see `accept`).
    #[allow(clippy::too_many_arguments)]
    pub fn change(
        &self,
        action: ChangeAction,
        role: MemberRole,
        member: &Device,
        member_certificate: Option<&AgentCertificate>,
        signer: &Device,
        signer_certificate: Option<&AgentCertificate>,
    ) -> MembershipChange {
        self.change_at(
            self.epoch,
            self.head,
            action,
            role,
            member,
            member_certificate,
            signer,
            signer_certificate,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn change_at(
        &self,
        epoch: u64,
        previous_hash: [u8; 32],
        action: ChangeAction,
        role: MemberRole,
        member: &Device,
        member_certificate: Option<&AgentCertificate>,
        signer: &Device,
        signer_certificate: Option<&AgentCertificate>,
    ) -> MembershipChange {
        MembershipChange::sign(
            ChangeProposal {
                conversation: self.conversation,
                epoch,
                previous_hash,
                issued_at: now(),
                action,
                role,
                member: member.identity.clone(),
                devices: vec![member.device_id],
                member_certificate: member_certificate.cloned(),
            },
            &signer.signing,
            signer.identity.clone(),
            signer.device_id,
            signer_certificate.cloned(),
        )
        .unwrap()
    }

    pub fn accept(&mut self, change: &MembershipChange) {
        assert_eq!(change.epoch(), self.epoch);
        self.head = change.hash();
        self.epoch += 1;
    }
}

pub async fn publish_list(p: &mut Peer, device: &Device, devices: &[u32]) {
    let list = DeviceList::issue(&device.signing, &device.identity, 1, devices).unwrap();
    assert_eq!(
        p.call(FrameBody::PublishDeviceList(list)).await,
        FrameBody::Ok
    );
}

pub fn envelope(to: &Device, payload: &[u8]) -> OutgoingEnvelope {
    OutgoingEnvelope {
        recipient: to.address(),
        payload: payload.to_vec(),
    }
}

pub fn archive_envelope(conversation: ConversationId) -> ArchiveEnvelope {
    let k = SigningKey::from_bytes(&[0x3e; 32]);
    ArchiveEnvelope {
        conversation,
        policy_sequence: 1,
        ephemeral: X25519PublicKey::from_array(
            k.verifying_key().to_montgomery().to_bytes(),
            "ephemeral",
        )
        .unwrap(),
        ciphertext: vec![7; 64],
    }
}

pub async fn membership_len(p: &mut Peer, conversation: ConversationId) -> usize {
    match p
        .call(q(QueueFrame::FetchMembership {
            conversation,
            from_epoch: 0,
        }))
        .await
    {
        FrameBody::Queue(m) => match *m {
            QueueFrame::Membership(changes) => changes.len(),
            other => panic!("not a membership: {other:?}"),
        },
        other => panic!("not a membership: {other:?}"),
    }
}
