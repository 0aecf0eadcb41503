//! Abuse scenarios from issue 12, run against a relay with its default limits; each ends in a
//! PASS or FAIL line against a stated bound (`docs/performance.md`, "Under abuse").

use std::path::Path;
use std::time::{Duration, Instant};

use hushwire::proto::relay::{ErrorCode, Frame, FrameBody, MAX_ENVELOPE_LEN, OutgoingEnvelope};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use super::{Args, Device, RelayProcess, Socket, next_frame, send};

/// The relay defaults the bounds below are stated against (`docs/relay-protocol.md` §6).
const SENDER_QUOTA_BYTES: u64 = 32 << 20;
const MAX_PENDING_PER_ADDRESS: usize = 128;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// What one slow reader may cost the relay while its write times out: one delivery batch
/// (1 MiB of payload or one envelope), one frame in the WebSocket buffer, and slack.
const SLOW_READER_BOUND_KIB: u64 = 2560;

/// Which scenario.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Attack {
    /// One registered device sends 96 KiB envelopes to another as fast as the relay lets it;
    /// then a third device sends one. PASS: the flooder stored at most its share (32 MiB) and
    /// the third device's envelope is accepted.
    Flood,
    /// --attackers devices authenticate and stop reading while 7.5 MiB is delivered to each.
    /// PASS: the relay closes all of them within the write timeout + 30 s and its RSS grows
    /// by at most 2.5 MiB per reader meanwhile.
    SlowReaders,
    /// --attackers connections from one address send half an HTTP request and wait. PASS: at
    /// most 128 stay open after a second, /healthz answers another address meanwhile, and all
    /// are closed within the header-read timeout + 10 s.
    Pending,
}

/// Runs `mode`; `Ok(true)` for PASS.
pub async fn run(mode: Attack, bin: &Path, args: &Args) -> Result<bool, String> {
    let dir = crate::scratch::scratch_dir("attack");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let outcome = match mode {
        Attack::Flood => flood(bin, &dir).await,
        Attack::SlowReaders => slow_readers(bin, &dir, args.attackers).await,
        Attack::Pending => pending(bin, &dir, args.attackers).await,
    };
    let (pass, line) = outcome?;
    println!("{} {mode:?}: {line}", if pass { "PASS" } else { "FAIL" });
    Ok(pass)
}

/// Sends `body` as request `id` and returns the answer (skipping unsolicited frames).
async fn call(socket: &mut Socket, id: u32, body: FrameBody) -> Result<FrameBody, String> {
    send(
        socket,
        Frame {
            request_id: id,
            body,
        },
    )
    .await?;
    loop {
        let frame = next_frame(socket).await?;
        if frame.request_id == id {
            return Ok(frame.body);
        }
    }
}

async fn flood(bin: &Path, dir: &Path) -> Result<(bool, String), String> {
    let relay = RelayProcess::start_with(bin, dir, &[], false, &[])?;
    let (mallory, bob, carol) = (Device::new(1), Device::new(2), Device::new(3));
    let mut m = mallory.connect(&relay.url(), true).await?;
    drop(bob.connect(&relay.url(), true).await?);
    let mut c = carol.connect(&relay.url(), true).await?;
    let started = Instant::now();
    let (mut stored, mut stored_bytes, mut rate_limited) = (0u64, 0u64, 0u64);
    let mut stopped_by = String::from("10,000 envelopes sent");
    for i in 0..10_000u32 {
        let body = FrameBody::Send(vec![OutgoingEnvelope {
            recipient: bob.address,
            payload: vec![0x5a; MAX_ENVELOPE_LEN],
        }]);
        match call(&mut m, i + 10, body).await? {
            FrameBody::Sent(_) => {
                stored += 1;
                stored_bytes += MAX_ENVELOPE_LEN as u64;
            }
            FrameBody::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms,
            } => {
                rate_limited += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(retry_after_ms))).await;
            }
            FrameBody::Error { code, .. } => {
                stopped_by = format!("refused with {code:?}");
                break;
            }
            other => return Err(format!("unexpected answer {other:?}")),
        }
        if started.elapsed() > Duration::from_secs(120) {
            stopped_by = "120 s elapsed".into();
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let carol_answer = call(
        &mut c,
        1_000_000,
        FrameBody::Send(vec![OutgoingEnvelope {
            recipient: bob.address,
            payload: vec![1; 1024],
        }]),
    )
    .await?;
    let carol_ok = matches!(carol_answer, FrameBody::Sent(_));
    let pass = stored_bytes <= SENDER_QUOTA_BYTES && carol_ok;
    Ok((
        pass,
        format!(
            "flooder stored {stored} envelopes ({:.1} MiB; bound {} MiB) in {secs:.1} s, \
             {rate_limited} sends rate-limited, stopped: {stopped_by}; another sender then got \
             {}",
            stored_bytes as f64 / 1048576.0,
            SENDER_QUOTA_BYTES >> 20,
            if carol_ok {
                "Sent".to_string()
            } else {
                format!("{carol_answer:?}")
            }
        ),
    ))
}

/// `GET path` on loopback `port`; the response text (empty if refused).
async fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Drops the connections the relay has closed (EOF or reset); how many are left.
fn still_open(held: &mut Vec<TcpStream>) -> usize {
    held.retain(|c| {
        let mut buf = [0u8; 256];
        match c.try_read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    });
    held.len()
}

fn open_connections(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix("hushwire_relay_open_connections ")
            .and_then(|v| v.trim().parse().ok())
    })
}

async fn slow_readers(bin: &Path, dir: &Path, n: usize) -> Result<(bool, String), String> {
    // Registering --attackers devices from one address needs the registration rate lifted;
    // every limit under test keeps its default.
    let relay = RelayProcess::start_with(
        bin,
        dir,
        &[],
        false,
        &[("HUSHWIRE_RELAY_REGISTRATION_RATE", "1000000")],
    )?;
    let sender = Device::new(1);
    let mut s = sender.connect(&relay.url(), true).await?;
    let mut readers = Vec::new();
    let mut stalled = Vec::new();
    for i in 0..n {
        let d = Device::new(100 + i as u64);
        stalled.push(d.connect(&relay.url(), true).await?);
        readers.push(d);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = relay.rss_kib();
    // 80 x 96 KiB = 7.5 MiB each, in frames of 16: more than loopback's socket buffers hold,
    // within the default per-pair rate's burst (8 MiB) and share (32 MiB).
    let mut id = 10;
    for r in &readers {
        for _ in 0..5 {
            let envelopes = (0..16)
                .map(|_| OutgoingEnvelope {
                    recipient: r.address,
                    payload: vec![0x5a; MAX_ENVELOPE_LEN],
                })
                .collect();
            id += 1;
            match call(&mut s, id, FrameBody::Send(envelopes)).await? {
                FrameBody::Sent(_) => {}
                other => return Err(format!("send refused: {other:?}")),
            }
        }
    }
    let started = Instant::now();
    let deadline = WRITE_TIMEOUT + Duration::from_secs(30);
    let mut peak = relay.rss_kib();
    let mut open = u64::MAX;
    while started.elapsed() < deadline {
        peak = peak.max(relay.rss_kib());
        open = open_connections(&http_get(relay.port, "/metrics").await).unwrap_or(u64::MAX);
        // The sender's own connection stays.
        if open <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(stalled);
    let growth = peak.saturating_sub(rss_start);
    let bound = SLOW_READER_BOUND_KIB * n as u64;
    let all_closed = open <= 1;
    Ok((
        all_closed && growth <= bound,
        format!(
            "{n} readers stalled with 7.5 MiB each: {} closed by the relay after {:.1} s; relay \
             RSS {} KiB at start, peak +{growth} KiB (bound +{bound} KiB = 2.5 MiB per reader)",
            if all_closed {
                "all".to_string()
            } else {
                format!("{} still open, not all", open.saturating_sub(1))
            },
            started.elapsed().as_secs_f64(),
            rss_start
        ),
    ))
}

async fn pending(bin: &Path, dir: &Path, n: usize) -> Result<(bool, String), String> {
    let relay = RelayProcess::start_with(bin, dir, &[], false, &[])?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start = relay.rss_kib();
    let mut held = Vec::new();
    for _ in 0..n {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", relay.port)).await else {
            break;
        };
        let _ = c
            .write_all(b"GET /v1/websocket HTTP/1.1\r\nHost: x\r\n")
            .await;
        held.push(c);
    }
    let opened = held.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // /healthz from another loopback address, which has its own pending places.
    let health = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind("127.0.0.2:0".parse().ok()?).ok()?;
        let mut s = socket
            .connect(([127, 0, 0, 1], relay.port).into())
            .await
            .ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(String::from_utf8_lossy(&out).contains("ok"))
    };
    let healthy = tokio::time::timeout(Duration::from_secs(2), health)
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
    let open_after_1s = still_open(&mut held);
    let rss_held = relay.rss_kib();
    let started = Instant::now();
    while started.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(10)
        && still_open(&mut held) > 0
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let open_at_end = still_open(&mut held);
    let pass = open_after_1s <= MAX_PENDING_PER_ADDRESS && healthy && open_at_end == 0;
    Ok((
        pass,
        format!(
            "{opened} half-open requests from one address: {open_after_1s} held after 1 s \
             (bound {MAX_PENDING_PER_ADDRESS}), /healthz from another address {}, {open_at_end} \
             still open {:.0} s later (bound 0 after the {} s header timeout); relay RSS {} KiB \
             at start, {} KiB while held",
            if healthy {
                "answered"
            } else {
                "did NOT answer"
            },
            started.elapsed().as_secs_f64() + 1.0,
            HEADER_READ_TIMEOUT.as_secs(),
            rss_start,
            rss_held
        ),
    ))
}
