//! Connections cannot exhaust the relay, and none is left open and silent
//! (`docs/relay-protocol.md` §1, §6): issue 12's connection faults, one test each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, Device, RelayProcess, metrics, sample};
use futures_util::StreamExt as _;
use hushwire_proto::relay::{FrameBody, MAX_ENVELOPE_LEN, OutgoingEnvelope};
use tokio_tungstenite::tungstenite::Message;

/// Polls the relay's metrics until `sample` reaches `want` (or 30 s pass): for effects of
/// timeouts, checked by their outcome rather than by how long they took.
async fn wait_for_sample(relay: &RelayProcess, name: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(relay.port).await;
        if sample(&text, name) == Some(want) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A device's second connection takes over live delivery, and the first is closed with code
/// 4001 "connected elsewhere" instead of staying open without ever receiving again.
#[tokio::test]
async fn a_devices_second_connection_closes_the_first_with_4001() {
    let relay = RelayProcess::start("elsewhere", &[]);
    let (alice, bob) = (Device::new(110, 1), Device::new(111, 1));
    let mut a = Client::register(&relay.url(), &alice).await;
    drop(Client::register(&relay.url(), &bob).await);
    let (mut first, _) = Client::login(&relay.url(), &bob).await;
    let (mut second, _) = Client::login(&relay.url(), &bob).await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), first.socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("the first connection was not closed: {other:?}"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(close.reason.as_str(), "connected elsewhere");
    assert!(matches!(
        a.send_to(bob.address(), b"to the newer").await,
        FrameBody::Sent(_)
    ));
    assert_eq!(second.receive(1).await[0].payload, b"to the newer");
}

/// A client that stops reading while the relay delivers is closed after the write timeout
/// (counted as `slow_reader`), and what was not acknowledged is delivered on its next
/// connection: nothing is lost, and the relay does not hold it in memory meanwhile.
#[tokio::test]
async fn a_slow_reader_is_closed_and_its_envelopes_stay_in_the_mailbox() {
    let relay = RelayProcess::start(
        "slow-reader",
        &[
            "--write-timeout-secs",
            "1",
            "--sender-rate",
            "100000",
            "--sender-byte-rate",
            "1000000000",
            "--sender-quota-bytes",
            "1000000000",
        ],
    );
    let (alice, bob) = (Device::new(112, 1), Device::new(113, 1));
    let mut a = Client::register(&relay.url(), &alice).await;
    drop(Client::register(&relay.url(), &bob).await);
    // Bob connects and never reads again.
    let (stalled, _) = Client::login(&relay.url(), &bob).await;
    // 320 x 96 KiB (30 MiB): more than loopback's socket buffers hold.
    for frame in 0..20u8 {
        let envelopes = (0..16u8)
            .map(|i| OutgoingEnvelope {
                recipient: bob.address(),
                payload: vec![frame ^ i; MAX_ENVELOPE_LEN],
            })
            .collect();
        assert!(matches!(
            a.call(FrameBody::Send(envelopes)).await,
            FrameBody::Sent(_)
        ));
    }
    let text = wait_for_sample(
        &relay,
        r#"hushwire_relay_refusals_total{reason="slow_reader"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="slow_reader"}"#
        ),
        Some(1.0),
        "the stalled connection was not closed: {text}"
    );
    drop(stalled);
    let (mut b, _) = Client::login(&relay.url(), &bob).await;
    let got = b.receive(320).await;
    assert_eq!(got.len(), 320);
}

/// A message over `MAX_FRAME_LEN` closes the connection with 1009 "message too big", as the
/// protocol says (it used to close without a status, 1005), and other connections go on.
#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    use futures_util::SinkExt as _;
    let relay = RelayProcess::start("too-big", &[]);
    let mut c = common::connect(&relay.url()).await;
    let oversized = vec![0u8; hushwire_proto::relay::MAX_FRAME_LEN + 1];
    let _ = c.socket.send(Message::Binary(oversized.into())).await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), c.socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.expect("a close code").code), 1009);
    drop(Client::register(&relay.url(), &Device::new(114, 1)).await);
}

/// Reads until the relay closes the connection (EOF or reset), or 20 s pass: whether it
/// closed, and what it sent.
async fn closed_by_relay(s: &mut tokio::net::TcpStream) -> (bool, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (closed, got)
}

/// Slowloris: a request whose headers never finish is closed after the header-read timeout
/// instead of being held for as long as the client likes.
#[tokio::test]
async fn a_request_whose_headers_never_finish_is_closed() {
    use tokio::io::AsyncWriteExt as _;
    let relay = RelayProcess::start("slowloris", &["--header-read-timeout-secs", "1"]);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .unwrap();
    s.write_all(b"GET /v1/websocket HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (closed, _) = closed_by_relay(&mut s).await;
    assert!(closed, "a half-sent request was held open");
    // The relay raised its open-file limit at start-up and said so.
    assert!(
        relay.log_text().contains("open_file_limit"),
        "{}",
        relay.log_text()
    );
    assert!(
        common::http_get(relay.port, "/healthz")
            .await
            .contains("ok")
    );
}

/// One address can hold only `--max-pending-per-address` connections that have not
/// authenticated; one more is closed at once (counted as `pending_per_address`), other work
/// goes on, and the places come back when those connections end or authenticate.
#[tokio::test]
async fn pending_connections_are_capped_per_address() {
    let relay = RelayProcess::start(
        "pending",
        &[
            "--max-pending-per-address",
            "3",
            "--header-read-timeout-secs",
            "60",
        ],
    );
    // Three idle TCP connections (nothing sent) hold this address's places.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
                .await
                .unwrap(),
        );
    }
    // Give the relay time to accept all three (it closes a fourth only once it accepted it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .unwrap();
    let (closed, got) = closed_by_relay(&mut fourth).await;
    assert!(
        closed && got.is_empty(),
        "a 4th pending connection was served"
    );
    drop(idle);
    // Places come back when connections end; an authenticated connection holds none.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = metrics(relay.port).await;
        if text.contains("hushwire_relay") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // At least the 4th; a metrics request made before the relay saw the idle ones close
    // may have been refused as well.
    let refused = sample(
        &text,
        r#"hushwire_relay_refusals_total{reason="pending_per_address"}"#,
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "{text}");
    assert!(relay.log_text().contains("pending_per_address"));
    let mut clients = Vec::new();
    for n in 0..5u8 {
        clients.push(Client::register(&relay.url(), &Device::new(120 + n, 1)).await);
    }
    assert!(
        common::http_get(relay.port, "/healthz")
            .await
            .contains("ok")
    );
}
