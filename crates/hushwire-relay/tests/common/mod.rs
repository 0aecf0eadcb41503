//! Test harness: the real relay binary on an ephemeral loopback port, and a minimal client that
//! speaks the relay protocol with proto types only.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt as _, StreamExt as _};
use hushwire_proto::codec::Codec;
use hushwire_proto::keys::identity_binding_message;
use hushwire_proto::relay::{
    Challenge, Credentials, DeviceAddress, Frame, FrameBody, OutgoingEnvelope,
};
use hushwire_proto::{
    IdentityKey, KemPreKey, KemPreKeyKind, KemPublicKey, OneTimePreKey, PreKeyBundle, SignedPreKey,
    Signer as _, X25519PublicKey, labels,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A relay process; killed on drop.
pub struct RelayProcess {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    /// Everything the relay printed up to and including its listening line.
    pub banner: String,
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hushwire-relay-test-{name}-{}-{}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// A PostgreSQL deployment's relay key file, made once with `hushwire-relay relay-key` (the
/// relay never makes one by itself on PostgreSQL) and given to every instance.
pub fn shared_relay_key(name: &str) -> PathBuf {
    let path = temp_dir(name).join("relay-key");
    let out = Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
        .args(["--relay-key-file", &path.display().to_string(), "relay-key"])
        .output()
        .expect("relay-key runs");
    assert!(
        out.status.success(),
        "relay-key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

impl RelayProcess {
    /// Starts the relay with SQLite in a fresh data dir (plus `extra` flags).
    pub fn start(name: &str, extra: &[&str]) -> Self {
        let data_dir = temp_dir(name);
        let mut args = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(data_dir, args)
    }

    pub fn spawn(data_dir: PathBuf, args: Vec<String>) -> Self {
        let log = data_dir.join(format!("relay-{}.log", rand_u64()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
            .args(&args)
            .env("HUSHWIRE_RELAY_LOG", "info")
            // Tests register and fetch from one address far faster than a clinic does; the
            // tests of these limits give them as flags, which win over the environment.
            .env("HUSHWIRE_RELAY_REGISTRATION_RATE", "1000000")
            .env("HUSHWIRE_RELAY_FETCH_RATE", "1000000")
            .env("HUSHWIRE_RELAY_TARGET_PREKEY_RATE", "1000000")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("relay binary starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut port = None;
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if let Some(i) = line.find("://127.0.0.1:") {
                let rest = &line[i + "://127.0.0.1:".len()..];
                port = rest.split('/').next().and_then(|p| p.parse().ok());
                break;
            }
        }
        let port = port.unwrap_or_else(|| panic!("relay did not report its port; output:\n{seen}"));
        // Keep draining stderr into a log file so the relay never blocks on a full pipe.
        let log_path = log.clone();
        let banner = seen.clone();
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut f = std::fs::File::create(log_path).unwrap();
            let _ = f.write_all(seen.as_bytes());
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(f, "{line}");
            }
        });
        Self {
            child,
            port,
            data_dir,
            args,
            log,
            banner,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/websocket", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit: the relay's graceful stop, after which its audit writer
    /// has flushed what it held and signed a final checkpoint.
    pub fn stop_gracefully(&mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let _ = self.child.wait();
    }

    /// SIGKILL, then start again on the same data dir (a new port).
    pub fn crash_and_restart(&mut self) {
        self.kill();
        let fresh = Self::spawn(self.data_dir.clone(), self.args.clone());
        let old = std::mem::replace(self, fresh);
        std::mem::forget(old);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A device: an Ed25519 identity with an X25519 key bound to it (the X25519 key is another
/// Ed25519 key's Montgomery form: a valid point, which is all the relay checks).
pub struct Device {
    pub signing: SigningKey,
    pub identity: IdentityKey,
    pub device_id: u32,
}

impl Device {
    pub fn new(seed: u8, device_id: u32) -> Self {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let dh_source = SigningKey::from_bytes(&[seed ^ 0x55; 32]);
        let dh =
            X25519PublicKey::from_array(dh_source.verifying_key().to_montgomery().to_bytes(), "dh")
                .unwrap();
        let binding = signing.sign(
            labels::SIG_IDENTITY_BINDING,
            &identity_binding_message(signing.verifying_key().as_bytes(), dh.as_bytes()),
        );
        let identity = IdentityKey::new(signing.verifying_key().to_bytes(), dh, binding).unwrap();
        Self {
            signing,
            identity,
            device_id,
        }
    }

    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            fingerprint: self.identity.fingerprint().0,
            device_id: self.device_id,
        }
    }

    pub fn credentials(&self, challenge: &Challenge) -> Credentials {
        Credentials::answer(
            self.identity.clone(),
            self.device_id,
            challenge,
            &self.signing,
        )
    }

    fn x25519(seed: u8) -> X25519PublicKey {
        X25519PublicKey::from_array(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_montgomery()
                .to_bytes(),
            "k",
        )
        .unwrap()
    }

    pub fn signed_prekey(&self, id: u32) -> SignedPreKey {
        let key = Self::x25519(id as u8 ^ 0xA0);
        SignedPreKey {
            id,
            key,
            signature: self.signing.sign(
                labels::SIG_SIGNED_PREKEY,
                &SignedPreKey::signed_message(self.device_id, id, &key),
            ),
        }
    }

    pub fn kem_prekey(&self, id: u32, kind: KemPreKeyKind) -> KemPreKey {
        let key = KemPublicKey::from_array([id as u8; 1568]);
        let signature = self.signing.sign(
            labels::SIG_KEM_PREKEY,
            &KemPreKey::signed_message(self.device_id, kind, id, &key),
        );
        KemPreKey {
            id,
            kind,
            key,
            signature,
        }
    }

    pub fn one_time_prekey(&self, id: u32) -> OneTimePreKey {
        OneTimePreKey {
            id,
            key: Self::x25519(id as u8),
        }
    }
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One connection of a device.
pub struct Client {
    pub socket: Socket,
    pub challenge: Challenge,
    next_request: u32,
}

pub async fn connect(url: &str) -> Client {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    let first = next_frame(&mut socket).await.expect("challenge");
    let FrameBody::Challenge(challenge) = first.body else {
        panic!("first frame is not a challenge: {first:?}")
    };
    Client {
        socket,
        challenge,
        next_request: 1,
    }
}

pub async fn next_frame(socket: &mut Socket) -> Option<Frame> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .ok()??
            .ok()?;
        match message {
            Message::Binary(b) => return Some(Frame::from_bytes(&b).expect("relay frames decode")),
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => return None,
        }
    }
}

impl Client {
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.socket
            .send(Message::Binary(bytes.into()))
            .await
            .unwrap();
    }

    pub async fn request(&mut self, body: FrameBody) -> u32 {
        let id = self.next_request;
        self.next_request += 1;
        self.send_raw(
            Frame {
                request_id: id,
                body,
            }
            .to_bytes(),
        )
        .await;
        id
    }

    /// The next frame answering `id`, collecting deliveries that arrive meanwhile.
    pub async fn answer(
        &mut self,
        id: u32,
        deliveries: &mut Vec<hushwire_proto::relay::Delivery>,
    ) -> FrameBody {
        loop {
            let frame = next_frame(&mut self.socket).await.expect("an answer");
            match frame.body {
                FrameBody::Deliver(d) => deliveries.push(d),
                FrameBody::PreKeyCount { .. } if frame.request_id == 0 => {}
                body if frame.request_id == id => return body,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn call(&mut self, body: FrameBody) -> FrameBody {
        let id = self.request(body).await;
        self.answer(id, &mut Vec::new()).await
    }

    pub async fn register(url: &str, device: &Device) -> Client {
        let mut c = connect(url).await;
        let credentials = device.credentials(&c.challenge);
        assert_eq!(
            c.call(FrameBody::Register {
                credentials,
                invite: None,
                certificate: None
            })
            .await,
            FrameBody::Ok
        );
        c
    }

    pub async fn login(
        url: &str,
        device: &Device,
    ) -> (Client, Vec<hushwire_proto::relay::Delivery>) {
        let mut c = connect(url).await;
        let credentials = device.credentials(&c.challenge);
        let id = c.request(FrameBody::Authenticate(credentials)).await;
        let mut deliveries = Vec::new();
        assert_eq!(c.answer(id, &mut deliveries).await, FrameBody::Ok);
        (c, deliveries)
    }

    pub async fn upload(&mut self, device: &Device, one_time: std::ops::Range<u32>) {
        let body = FrameBody::UploadPreKeys {
            signed_prekey: Some(device.signed_prekey(1)),
            last_resort_kem_prekey: Some(device.kem_prekey(2, KemPreKeyKind::LastResort)),
            one_time_prekeys: one_time
                .clone()
                .map(|i| device.one_time_prekey(i))
                .collect(),
            one_time_kem_prekeys: one_time
                .map(|i| device.kem_prekey(1000 + i, KemPreKeyKind::OneTime))
                .collect(),
        };
        assert_eq!(self.call(body).await, FrameBody::Ok);
    }

    pub async fn fetch(&mut self, target: DeviceAddress) -> Option<PreKeyBundle> {
        match self.call(FrameBody::FetchBundle(target)).await {
            FrameBody::Bundle(b) => Some(b),
            _ => None,
        }
    }

    pub async fn send_to(&mut self, to: DeviceAddress, payload: &[u8]) -> FrameBody {
        self.call(FrameBody::Send(vec![OutgoingEnvelope {
            recipient: to,
            payload: payload.to_vec(),
        }]))
        .await
    }

    /// Waits for `n` deliveries.
    pub async fn receive(&mut self, n: usize) -> Vec<hushwire_proto::relay::Delivery> {
        let mut out = Vec::new();
        while out.len() < n {
            if let FrameBody::Deliver(d) =
                next_frame(&mut self.socket).await.expect("a delivery").body
            {
                out.push(d);
            }
        }
        out
    }
}

/// Whether PostgreSQL answers at the test URL; tests that need it say loudly when it does not.
pub async fn postgres_url() -> Option<String> {
    let url = std::env::var("HUSHWIRE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect("127.0.0.1:5432")).await {
        Ok(Ok(_)) => Some(url),
        _ => {
            eprintln!(
                "\n*** SKIPPED: PostgreSQL is not reachable at 127.0.0.1:5432; set HUSHWIRE_TEST_DATABASE_URL or start it (.ci/run does) ***\n"
            );
            None
        }
    }
}

/// The relay's `/metrics` text (plain HTTP/1.1 over loopback).
pub async fn metrics(port: u16) -> String {
    http_get(port, "/metrics").await
}

/// `GET path` on the relay; the whole response, status line included.
pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the Prometheus sample `name` (with its labels, as printed) in `text`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
}

/// A storage engine the same test runs against.
#[derive(Clone, Debug)]
pub enum Engine {
    /// One relay process on its own SQLite file.
    Sqlite,
    /// Two relay processes sharing a fresh schema of this PostgreSQL database.
    Postgres(String),
}

impl Engine {
    /// SQLite always; PostgreSQL when it answers (else a loud SKIPPED line for it).
    pub async fn all() -> Vec<Engine> {
        let mut engines = vec![Engine::Sqlite];
        if let Some(url) = postgres_url().await {
            engines.push(Engine::Postgres(url));
        }
        engines
    }

    /// The relay processes of this engine, each started with `extra` flags.
    pub fn start(&self, name: &str, extra: &[&str]) -> Vec<RelayProcess> {
        match self {
            Engine::Sqlite => vec![RelayProcess::start(name, extra)],
            Engine::Postgres(url) => {
                let schema = format!(
                    "hw_{}_{}",
                    name.replace('-', "_"),
                    rand_u64() % 1_000_000_000
                );
                let key = shared_relay_key(name);
                (0..2)
                    .map(|_| {
                        // Each instance has its own data dir: its own audit key and chain; both
                        // present the deployment's one relay key.
                        let dir = temp_dir(name);
                        let mut args: Vec<String> = [
                            "--listen",
                            "127.0.0.1:0",
                            "--data-dir",
                            &dir.display().to_string(),
                            "--database-url",
                            url,
                            "--database-schema",
                            &schema,
                            "--relay-key-file",
                            &key.display().to_string(),
                        ]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                        args.extend(extra.iter().map(|s| s.to_string()));
                        RelayProcess::spawn(dir, args)
                    })
                    .collect()
            }
        }
    }
}
