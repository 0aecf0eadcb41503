//! Plaintext never reaches the relay: messages carrying a marker string go from one core session
//! to another through a real relay (in this process, logging at TRACE into a buffer); afterwards
//! the relay's database files, its logs and its metrics hold the marker zero times. Positive
//! controls prove each scan would have found it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use hushwire::proto::codec::Codec;
use hushwire::proto::relay::{Credentials, DeviceAddress, Frame, FrameBody, OutgoingEnvelope};
use hushwire::{Account, Session};
use hushwire_relay::config::Settings;
use hushwire_relay::storage::SqliteStore;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use tokio_tungstenite::tungstenite::Message;

const MARKER: &str = "PHI-MARKER-7f3a9c-patient-has-diabetes";

/// Everything the relay logs, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn frame(socket: &mut Socket) -> Frame {
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Binary(b) => return Frame::from_bytes(&b).unwrap(),
            _ => continue,
        }
    }
}

/// The next delivery, skipping prekey-count notices.
async fn next_delivery(socket: &mut Socket) -> hushwire::proto::relay::Delivery {
    loop {
        if let FrameBody::Deliver(d) = frame(socket).await.body {
            return d;
        }
    }
}

/// Answer to request `id`, skipping unsolicited frames but keeping deliveries.
async fn answer(
    socket: &mut Socket,
    id: u32,
    deliveries: &mut Vec<hushwire::proto::relay::Delivery>,
) -> FrameBody {
    loop {
        let f = frame(socket).await;
        match f.body {
            FrameBody::Deliver(d) => deliveries.push(d),
            body if f.request_id == id => return body,
            _ => {}
        }
    }
}

async fn register(url: &str, account: &Account) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let FrameBody::Challenge(challenge) = frame(&mut socket).await.body else {
        panic!("no challenge")
    };
    let credentials = Credentials::answer(
        account.identity_key().clone(),
        account.device_id(),
        &challenge,
        account.identity(),
    );
    let request = Frame {
        request_id: 1,
        body: FrameBody::Register {
            credentials,
            invite: None,
            certificate: None,
        },
    };
    socket
        .send(Message::Binary(request.to_bytes().into()))
        .await
        .unwrap();
    assert_eq!(answer(&mut socket, 1, &mut Vec::new()).await, FrameBody::Ok);
    socket
}

async fn call(socket: &mut Socket, id: u32, body: FrameBody) -> FrameBody {
    socket
        .send(Message::Binary(
            Frame {
                request_id: id,
                body,
            }
            .to_bytes()
            .into(),
        ))
        .await
        .unwrap();
    answer(socket, id, &mut Vec::new()).await
}

fn address(account: &Account) -> DeviceAddress {
    DeviceAddress {
        fingerprint: account.identity_key().fingerprint().0,
        device_id: account.device_id(),
    }
}

fn scan(dir: &std::path::Path, needle: &[u8]) -> usize {
    let mut hits = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        hits += bytes.windows(needle.len()).filter(|w| *w == needle).count();
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_never_reaches_the_relay_database_logs_or_metrics() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();

    let data_dir =
        std::env::temp_dir().join(format!("hushwire-e2e-plaintext-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = Settings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data_dir.clone()),
        ..Settings::default()
    }
    .resolve(Settings::default());
    let store = SqliteStore::open(&data_dir.join("relay.db")).await.unwrap();
    let relay = hushwire_relay::server::start(store, config, None)
        .await
        .unwrap();
    let url = relay.url();

    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let alice = Account::new(1, 0, &mut rng);
    let mut bob = Account::new(1, 0, &mut rng);
    let mut a = register(&url, &alice).await;
    let mut b = register(&url, &bob).await;

    // Bob publishes prekeys from his core account; Alice fetches his bundle through the relay.
    let upload = FrameBody::UploadPreKeys {
        signed_prekey: bob.signed_prekey().cloned(),
        last_resort_kem_prekey: bob.last_resort_kem_prekey().cloned(),
        one_time_prekeys: bob.generate_one_time_prekeys(5, &mut rng),
        one_time_kem_prekeys: bob.generate_one_time_kem_prekeys(5, &mut rng),
    };
    assert_eq!(call(&mut b, 2, upload).await, FrameBody::Ok);
    let FrameBody::Bundle(bundle) = call(&mut a, 2, FrameBody::FetchBundle(address(&bob))).await
    else {
        panic!("no bundle")
    };
    let mut to_bob = Session::initiate(alice.identity(), &bundle, &mut rng).unwrap();

    // Ten messages each way, every one carrying the marker.
    let mut from_alice: Option<Session> = None;
    let mut ciphertexts = Vec::new();
    for i in 0..10u32 {
        let text = format!("{MARKER} #{i}");
        let wire = to_bob.encrypt(text.as_bytes()).unwrap();
        ciphertexts.push(wire.clone());
        let send = FrameBody::Send(vec![OutgoingEnvelope {
            recipient: address(&bob),
            payload: wire,
        }]);
        assert!(matches!(
            call(&mut a, 10 + i, send).await,
            FrameBody::Sent(_)
        ));
        let delivery = next_delivery(&mut b).await;
        let plaintext = match &mut from_alice {
            None => {
                let inbound = bob.accept(&delivery.payload, &mut rng).unwrap();
                from_alice = Some(inbound.session);
                inbound.plaintext
            }
            Some(s) => s.decrypt(&delivery.payload, &mut rng).unwrap(),
        };
        // Positive control: the marker really is in what the endpoints see.
        assert_eq!(plaintext, text.as_bytes());
        if i == 0 {
            // Positive control: while unacknowledged, the ciphertext is in the database files,
            // so the scan below would find stored bytes.
            assert!(
                scan(&data_dir, &ciphertexts[0][..48]) > 0,
                "scan cannot see stored envelopes"
            );
        }
        assert_eq!(
            call(&mut b, 100 + i, FrameBody::Ack(vec![delivery.server_id])).await,
            FrameBody::Ok
        );

        let reply = format!("{MARKER} reply #{i}");
        let wire = from_alice
            .as_mut()
            .unwrap()
            .encrypt(reply.as_bytes())
            .unwrap();
        let send = FrameBody::Send(vec![OutgoingEnvelope {
            recipient: address(&alice),
            payload: wire,
        }]);
        assert!(matches!(
            call(&mut b, 200 + i, send).await,
            FrameBody::Sent(_)
        ));
        let delivery = next_delivery(&mut a).await;
        assert_eq!(
            to_bob.decrypt(&delivery.payload, &mut rng).unwrap(),
            reply.as_bytes()
        );
        assert_eq!(
            call(&mut a, 300 + i, FrameBody::Ack(vec![delivery.server_id])).await,
            FrameBody::Ok
        );
    }

    let metrics = tokio::task::spawn_blocking({
        let address = relay.address;
        move || {
            use std::io::Read as _;
            let mut s = std::net::TcpStream::connect(address).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        }
    })
    .await
    .unwrap();
    drop((a, b));
    relay.stop().await.unwrap();

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // Positive controls: the logs and metrics are real and non-trivial.
    assert!(logs.contains("device registered"), "log capture is empty");
    assert!(
        metrics.contains("hushwire_relay_envelopes_stored_total 20"),
        "{metrics}"
    );
    // The property.
    assert_eq!(
        scan(&data_dir, MARKER.as_bytes()),
        0,
        "marker found in the relay's files"
    );
    assert!(!logs.contains(MARKER), "marker found in the relay's logs");
    assert!(
        !metrics.contains(MARKER),
        "marker found in the relay's metrics"
    );
    eprintln!(
        "never-plaintext: 20 messages relayed; marker hits: database files 0, logs 0 ({} bytes at TRACE), metrics 0",
        logs.len()
    );
}
