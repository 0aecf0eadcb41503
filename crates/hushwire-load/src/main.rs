//! `hushwire-load`: N simulated devices against a real relay process on loopback.
//!
//! It starts the relay itself (fresh data directory, ephemeral port) so it can read the relay's
//! RSS and, in crash mode, SIGKILL and restart it. Half the devices send to the other half,
//! each with up to `--in-flight` unanswered sends; receivers acknowledge every delivery. At the
//! end it prints msgs/s, send→ack and send→deliver latency percentiles, the relay's RSS at
//! start, per idle connection and under load, and sent / acked / delivered / lost / duplicated
//! counts (an acked message that is never delivered is lost).
//!
//! ```sh
//! cargo build --release -p hushwire-relay -p hushwire-load
//! target/release/hushwire-load --devices 200 --messages 100000
//! target/release/hushwire-load --devices 20 --messages 20000 --kills 10      # crash mode
//! ```

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

mod attack;
mod claims;
mod conversations;
mod scratch;
use futures_util::{SinkExt as _, StreamExt as _};
use hushwire::IdentityKeyPair;
use hushwire::proto::codec::Codec;
use hushwire::proto::relay::{
    Credentials, DeviceAddress, Frame, FrameBody, MAX_ENVELOPE_LEN, OutgoingEnvelope,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use tokio_tungstenite::tungstenite::Message;

/// Load and crash tool for the Hushwire relay.
#[derive(Parser, Clone)]
#[command(version)]
struct Args {
    /// Simulated devices (half send, half receive): an even number, or with
    /// --conversation-devices a multiple of it.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Messages to send in total.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Unanswered sends each sender keeps in flight.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Envelope payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Crash mode: SIGKILL and restart the relay this many times during the run.
    #[arg(long, default_value_t = 0)]
    kills: u32,
    /// The relay binary (default: `hushwire-relay` beside this one).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// PostgreSQL URL: run two relay instances on it (senders on one, receivers on the other),
    /// in a schema of their own (`hushwire_<mode>_<pid>`) that is dropped when the run ends.
    #[arg(long)]
    database_url: Option<String>,
    /// Extra devices that only connect and idle, to measure memory per idle connection.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Instead of a throughput run, an abuse scenario against the relay's default limits,
    /// ending in PASS or FAIL against a stated bound (exit status 0 or 1): `flood` (one sender
    /// fills a mailbox), `slow-readers` (--attackers clients stop reading), `pending`
    /// (--attackers half-open HTTP requests from one address).
    #[arg(long, value_enum)]
    attack: Option<attack::Attack>,
    /// Attacking clients or connections for --attack.
    #[arg(long, default_value_t = 100)]
    attackers: usize,
    /// Offered load in messages per second over all senders (0: as fast as acks allow). Each
    /// sender sends on a fixed schedule, the senders' schedules evenly staggered, so the relay
    /// sees one message every 1/rate seconds and latency is measured at that rate; give enough
    /// --in-flight that the schedule never waits for an ack.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With --rate: every sender sends at the same instants instead of taking turns, so the
    /// relay sees bursts of one message per sender (50 senders at 100 msgs/s: 50 at once every
    /// half second). Bursts, not a steady rate: what many patients answering one broadcast do.
    #[arg(long)]
    in_step: bool,
    /// Instead of a throughput run, the clinic queue: this many patients open a conversation
    /// at once and --agents agents race to claim each; prints claim latency p50/p99 and PASS
    /// when every conversation was won exactly once (two instances with --database-url).
    #[arg(long, default_value_t = 0)]
    claims: usize,
    /// Agents racing in --claims mode.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Instead of a throughput run of pairs: --devices devices in clinic conversations of this
    /// many member devices (a patient's and an agent's, opened and claimed), sending
    /// `ConversationSend` to the other members, and the same devices sending plain two-party
    /// `Send`, alternately in one run; prints delivered envelopes/s of both, their ratio and
    /// PASS when the conversation figure is at least the two-party one. --messages counts
    /// conversation messages (each D − 1 envelopes); the two-party phase sends as many envelopes.
    #[arg(long, default_value_t = 0)]
    conversation_devices: usize,
    /// Rounds of (two-party, conversation) in --conversation-devices mode.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
}

/// Set once Ctrl-C, SIGTERM or SIGHUP arrived ([`interrupted`]): a relay start, which waits
/// without yielding to the runtime, checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long a relay may take to print that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A relay process this tool owns.
struct RelayProcess {
    child: Child,
    port: u16,
}

impl RelayProcess {
    /// The relay with every per-user limit lifted (throughput and crash measurements).
    fn start(bin: &Path, data_dir: &Path, extra: &[String]) -> Result<Self, String> {
        Self::start_with(bin, data_dir, extra, true, &[])
    }

    /// The relay with `extra` flags and `env` variables; `lift_limits` lifts every per-user
    /// limit (attack modes keep them: they check that the limits hold).
    fn start_with(
        bin: &Path,
        data_dir: &Path,
        extra: &[String],
        lift_limits: bool,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let lifted: &[&str] = if lift_limits {
            &[
                "--device-rate",
                "1000000",
                "--address-rate",
                "1000000",
                "--mailbox-quota",
                "1000000",
            ]
        } else {
            &[]
        };
        let lifted_env: &[&str] = if lift_limits {
            &[
                "HUSHWIRE_RELAY_REGISTRATION_RATE",
                "HUSHWIRE_RELAY_SENDER_RATE",
                "HUSHWIRE_RELAY_SENDER_BYTE_RATE",
                "HUSHWIRE_RELAY_SENDER_QUOTA",
                "HUSHWIRE_RELAY_SENDER_QUOTA_BYTES",
                "HUSHWIRE_RELAY_MAILBOX_BYTES",
                "HUSHWIRE_RELAY_FETCH_RATE",
                "HUSHWIRE_RELAY_TARGET_PREKEY_RATE",
                "HUSHWIRE_RELAY_MAX_PENDING_PER_ADDRESS",
            ]
        } else {
            &[]
        };
        let mut child = Command::new(bin)
            .args(extra)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &data_dir.display().to_string(),
            ])
            .args(lifted)
            .env("HUSHWIRE_RELAY_LOG", "warn,hushwire_relay=info")
            // The per-sender, per-address and per-pair limits (docs/relay-protocol.md section 6)
            // protect a clinic from one abusive user; this tool is one trusted user measuring
            // throughput from one address. As variables, not flags, so that an older relay
            // binary (measured side by side) ignores them.
            .envs(lifted_env.iter().map(|k| (*k, "1000000000")))
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        // The relay's log is read on a thread of its own (and drained there for the relay's
        // whole life, so it never blocks on a full pipe); this waits for the "listening" line
        // at most START_TIMEOUT, and gives up at once on Ctrl-C: a relay that neither listens
        // nor exits (stuck connecting to a database, say) must not hang the tool.
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut forward = true;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                forward = forward && lines_tx.send(line).is_ok();
            }
        });
        let started = Instant::now();
        let port = loop {
            let fail = |child: &mut Child, why: String| {
                let _ = child.kill();
                let _ = child.wait();
                Err(why)
            };
            if INTERRUPTED.load(Ordering::SeqCst) {
                return fail(
                    &mut child,
                    format!("interrupted while {} started", bin.display()),
                );
            }
            if started.elapsed() > START_TIMEOUT {
                return fail(
                    &mut child,
                    format!(
                        "{} did not start listening within {} s",
                        bin.display(),
                        START_TIMEOUT.as_secs()
                    ),
                );
            }
            let line = match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return fail(
                        &mut child,
                        format!("{} exited before listening", bin.display()),
                    );
                }
            };
            if let Some(i) = line.find("://127.0.0.1:") {
                let rest = line.get(i + "://127.0.0.1:".len()..).unwrap_or_default();
                match rest.split('/').next().and_then(|p| p.parse().ok()) {
                    Some(port) => break port,
                    None => return fail(&mut child, format!("unparsable port in: {line}")),
                }
            }
        };
        Ok(Self { child, port })
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/websocket", self.port)
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .map(str::to_owned)
            })
            .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An error if the relay ended on its own (this tool ends it only with [`Self::kill`]):
    /// the run could then never finish, and waiting for it would hang.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "the relay on port {} exited during the run ({status})",
                self.port
            )),
            _ => Ok(()),
        }
    }
}

/// The error a mode ended with, led by the cause when one of its relays has exited: a dead relay
/// otherwise shows only as "connection reset" on some device. Waits up to 0.5 s for the exit to
/// be seen (the connection breaks a moment before the process is reaped).
pub(crate) fn blame_relay(relays: &mut [RelayProcess], error: String) -> String {
    for _ in 0..10 {
        for relay in relays.iter_mut() {
            if let Err(dead) = relay.check_alive() {
                return format!("{dead}; then: {error}");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    error
}

/// A relay this tool started does not outlive it, whichever way a mode ends (an error returned
/// early included).
impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Device {
    identity: IdentityKeyPair,
    address: DeviceAddress,
}

impl Device {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = IdentityKeyPair::generate(&mut rng);
        let address = DeviceAddress {
            fingerprint: identity.public().fingerprint().0,
            device_id: 1,
        };
        Self { identity, address }
    }

    /// Connects and registers (first time) or authenticates.
    async fn connect(&self, url: &str, register: bool) -> Result<Socket, String> {
        // Nagle off, as the client library does (`hushwire-client`'s link): with it on, a
        // small frame can wait for a delayed ACK and the tool measures that, not the relay.
        let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|e| e.to_string())?;
        let challenge = loop {
            match next_frame(&mut socket).await?.body {
                FrameBody::Challenge(c) => break c,
                _ => continue,
            }
        };
        let credentials = Credentials::answer(
            self.identity.public().clone(),
            1,
            &challenge,
            &self.identity,
        );
        let body = if register {
            FrameBody::Register {
                credentials,
                invite: None,
                certificate: None,
            }
        } else {
            FrameBody::Authenticate(credentials)
        };
        send(
            &mut socket,
            Frame {
                request_id: 1,
                body,
            },
        )
        .await?;
        loop {
            let f = next_frame(&mut socket).await?;
            if f.request_id == 1 {
                return match f.body {
                    FrameBody::Ok => Ok(socket),
                    other => Err(format!("authentication refused: {other:?}")),
                };
            }
        }
    }
}

async fn next_frame(socket: &mut Socket) -> Result<Frame, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(b))) => {
                return Frame::from_bytes(&b).map_err(|e| e.to_string());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection closed".into()),
        }
    }
}

async fn send(socket: &mut Socket, frame: Frame) -> Result<(), String> {
    socket
        .send(Message::Binary(frame.to_bytes().into()))
        .await
        .map_err(|e| e.to_string())
}

/// Shared counters and latency samples.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    acked: AtomicU64,
    ack_latency_us: Mutex<Vec<u64>>,
    deliver_latency_us: Mutex<Vec<u64>>,
    /// (sender, seq) acked by the relay.
    acked_ids: Mutex<HashSet<(u32, u64)>>,
    /// (sender, seq) delivered, with how many times.
    delivered: Mutex<HashMap<(u32, u64), u32>>,
}

/// Message `seq` of `sender`, carrying its send time (`sent_at`, µs since the run's start).
fn payload(sender: u32, seq: u64, sent_at: u64, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(20));
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&sent_at.to_be_bytes());
    p.resize(size.max(20), 0x5a);
    p
}

/// Sends `count` messages to `to`, keeping `in_flight` unanswered; reconnects and resends the
/// unanswered ones whenever the connection drops (at least once).
/// What every device task shares: the current relay URL (it changes on restart), the
/// counters, and the run's start (payloads carry send times relative to it).
#[derive(Clone)]
struct Shared {
    url: Arc<Mutex<String>>,
    stats: Arc<Stats>,
    start: Instant,
}

async fn run_sender(
    device: Arc<Device>,
    index: u32,
    to: DeviceAddress,
    count: u64,
    args: Args,
    shared: Shared,
) {
    let Shared { url, stats, start } = shared;
    // With --rate, message n of sender i (of S) is due at `begin + (n + i/S) × pace`: each
    // sender keeps its pace and the senders take turns, so the relay sees a steady stream of
    // `rate` messages a second. (Without the stagger every sender sent at the same instants: at
    // 100 msgs/s from 50 senders, a burst of 50 every half second, whose last message waited
    // for the others' commits; that measured bursts, not a rate.)
    let senders = (args.devices / 2).max(1) as f64;
    let pace = (args.rate > 0).then(|| Duration::from_secs_f64(senders / args.rate as f64));
    let stagger = if args.in_step {
        0.0
    } else {
        f64::from(index) / senders
    };
    let begin = Instant::now();
    let due = |n: u64| pace.map(|p| begin + p.mul_f64(n as f64 + stagger));
    let mut next = 0u64;
    while next < count {
        let current = url.lock().map(|u| u.clone()).unwrap_or_default();
        let Ok(mut socket) = device.connect(&current, false).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut pending: HashMap<u32, (u64, Instant)> = HashMap::new();
        let mut failed = false;
        while next < count || !pending.is_empty() {
            let mut waiting_for_schedule = None;
            while pending.len() < args.in_flight && next < count {
                if let Some(at) = due(next)
                    && Instant::now() < at
                {
                    waiting_for_schedule = Some(at);
                    break;
                }
                let request_id = u32::try_from(next % u64::from(u32::MAX - 2)).unwrap_or(0) + 2;
                // On a schedule, latency counts from when the message was due, not from when
                // this task got round to it: a sender running late (the machine, or acks slower
                // than the schedule) must not hide the wait ("coordinated omission").
                let sent_at = due(next).unwrap_or_else(Instant::now);
                let frame = Frame {
                    request_id,
                    body: FrameBody::Send(vec![OutgoingEnvelope {
                        recipient: to,
                        payload: payload(
                            index,
                            next,
                            sent_at.saturating_duration_since(start).as_micros() as u64,
                            args.size,
                        ),
                    }]),
                };
                if send(&mut socket, frame).await.is_err() {
                    failed = true;
                    break;
                }
                stats.sent.fetch_add(1, Ordering::Relaxed);
                pending.insert(request_id, (next, sent_at));
                next += 1;
            }
            if failed {
                break;
            }
            let wait = match waiting_for_schedule {
                Some(at) if pending.is_empty() => {
                    tokio::time::sleep_until(at.into()).await;
                    continue;
                }
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(10),
            };
            let frame = tokio::time::timeout(wait, next_frame(&mut socket)).await;
            if frame.is_err() && waiting_for_schedule.is_some() {
                continue; // the next message is due: no ack yet is fine
            }
            match frame {
                Ok(Ok(Frame {
                    request_id,
                    body: FrameBody::Sent(_),
                })) => {
                    if let Some((seq, at)) = pending.remove(&request_id) {
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut l) = stats.ack_latency_us.lock() {
                            l.push(at.elapsed().as_micros() as u64);
                        }
                        if let Ok(mut ids) = stats.acked_ids.lock() {
                            ids.insert((index, seq));
                        }
                    }
                }
                Ok(Ok(_)) => {}
                _ => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            // Resend everything unanswered after reconnecting.
            if let Some(min) = pending.values().map(|(seq, _)| *seq).min() {
                next = next.min(min);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Receives until `expected` distinct messages arrived or `deadline`; acks each delivery.
async fn run_receiver(device: Arc<Device>, expected: u64, shared: Shared, deadline: Instant) {
    let Shared { url, stats, start } = shared;
    let mut seen = HashSet::new();
    while (seen.len() as u64) < expected && Instant::now() < deadline {
        let current = url.lock().map(|u| u.clone()).unwrap_or_default();
        let Ok(mut socket) = device.connect(&current, false).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut ack_id = 2u32;
        while (seen.len() as u64) < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Ok(frame)) = tokio::time::timeout(left, next_frame(&mut socket)).await else {
                break;
            };
            let FrameBody::Deliver(d) = frame.body else {
                continue;
            };
            let sender = u32::from_be_bytes(
                d.payload
                    .get(0..4)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or_default(),
            );
            let seq = u64::from_be_bytes(
                d.payload
                    .get(4..12)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or_default(),
            );
            let sent_at = u64::from_be_bytes(
                d.payload
                    .get(12..20)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or_default(),
            );
            let now = start.elapsed().as_micros() as u64;
            if let Ok(mut l) = stats.deliver_latency_us.lock() {
                l.push(now.saturating_sub(sent_at));
            }
            if let Ok(mut delivered) = stats.delivered.lock() {
                *delivered.entry((sender, seq)).or_insert(0) += 1;
            }
            seen.insert((sender, seq));
            ack_id = ack_id.wrapping_add(1).max(2);
            if send(
                &mut socket,
                Frame {
                    request_id: ack_id,
                    body: FrameBody::Ack(vec![d.server_id]),
                },
            )
            .await
            .is_err()
            {
                break;
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn latency_line(name: &str, samples: &Mutex<Vec<u64>>) -> String {
    let mut v = samples.lock().map(|v| v.clone()).unwrap_or_default();
    v.sort_unstable();
    format!(
        "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        percentile(&v, 0.50) as f64 / 1000.0,
        percentile(&v, 0.99) as f64 / 1000.0,
        v.last().copied().unwrap_or(0) as f64 / 1000.0,
        v.len()
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let database_url = args.database_url.clone();
    // Ctrl-C, SIGTERM or SIGHUP drops the run: each `RelayProcess` in it is killed as it is
    // dropped. The signal is awaited on a task of its own, which keeps running while a relay
    // start blocks this one, and raises INTERRUPTED for that start to see.
    let (signalled, signal) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let name = interrupted().await;
        INTERRUPTED.store(true, Ordering::SeqCst);
        let _ = signalled.send(name);
    });
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        Ok(name) = signal => Err(format!(
            "interrupted by {name}: the relays this run started were stopped"
        )),
    };
    scratch::remove_run_dirs();
    if let Some(url) = database_url {
        match scratch::drop_run_schemas(&url).await {
            Ok(n) => eprintln!("dropped {n} PostgreSQL schema(s) of this run"),
            Err(e) => eprintln!("warning: this run's PostgreSQL schemas were not dropped: {e}"),
        }
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Waits for Ctrl-C (SIGINT), SIGTERM or SIGHUP (a closed terminal); the signal's name.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
                _ = term.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// Makes `<dir>/relay-key` with `bin relay-key` (the instances of one PostgreSQL deployment
/// share one key: a relay on PostgreSQL never makes its own, docs/relay-protocol.md §3); its
/// path.
pub(crate) fn make_relay_key(bin: &Path, dir: &Path) -> Result<String, String> {
    let key = dir.join("relay-key").display().to_string();
    let made = Command::new(bin)
        .args(["--relay-key-file", &key, "relay-key"])
        .output()
        .map_err(|e| format!("cannot run {} relay-key: {e}", bin.display()))?;
    if !made.status.success() {
        return Err(format!(
            "{} relay-key failed: {}",
            bin.display(),
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    Ok(key)
}

/// Refuses arguments that would make a run hang or measure nothing, before any relay starts.
fn check_args(args: &Args) -> Result<(), String> {
    if args.devices < 2 {
        return Err(format!(
            "--devices {} is too few: a run needs at least 2 (a sender and its receiver)",
            args.devices
        ));
    }
    if !args.devices.is_multiple_of(2) && args.conversation_devices == 0 {
        return Err(format!(
            "--devices {} is odd: devices run in pairs (a sender and its receiver); give {} or {}",
            args.devices,
            args.devices - 1,
            args.devices + 1
        ));
    }
    if args.conversation_devices > 0 && !args.devices.is_multiple_of(args.conversation_devices) {
        return Err(format!(
            "--devices {} is not a multiple of --conversation-devices {}: every conversation \
             has that many member devices",
            args.devices, args.conversation_devices
        ));
    }
    if args.in_flight == 0 {
        return Err("--in-flight must be at least 1".into());
    }
    if args.size > MAX_ENVELOPE_LEN {
        return Err(format!(
            "--size {} is over the relay's envelope limit of {MAX_ENVELOPE_LEN} bytes (96 KiB): \
             every send would be refused",
            args.size
        ));
    }
    if args.in_step && args.rate == 0 {
        return Err("--in-step needs --rate (it sets how the rate is offered)".into());
    }
    Ok(())
}

async fn run(args: Args) -> Result<bool, String> {
    check_args(&args)?;
    let bin = match &args.relay_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("hushwire-relay"),
    };
    if let Some(mode) = args.attack {
        return attack::run(mode, &bin, &args).await;
    }
    if args.claims > 0 {
        let dir = scratch::scratch_dir("claims");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        return claims::run(
            &bin,
            &dir,
            args.claims,
            args.agents,
            args.database_url.as_deref(),
        )
        .await;
    }
    if args.conversation_devices > 0 {
        let dir = scratch::scratch_dir("conv");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        return conversations::run(&bin, &dir, &args).await;
    }
    let data_dir = scratch::scratch_dir("load");
    std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
    // With PostgreSQL, two instances share one schema: senders use the first, receivers the
    // second, so every delivery crosses instances (LISTEN/NOTIFY).
    let extra: Vec<String> = match &args.database_url {
        Some(url) => {
            let key = make_relay_key(&bin, &data_dir)?;
            vec![
                "--database-url".into(),
                url.clone(),
                "--database-schema".into(),
                format!("hushwire_load_{}", std::process::id()),
                "--relay-key-file".into(),
                key,
            ]
        }
        None => Vec::new(),
    };
    let mut relay = RelayProcess::start(&bin, &data_dir, &extra)?;
    let mut second = match &args.database_url {
        Some(_) => {
            let dir = data_dir.join("second");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            Some(RelayProcess::start(&bin, &dir, &extra)?)
        }
        None => None,
    };
    let receiver_url = Arc::new(Mutex::new(
        second
            .as_ref()
            .map_or_else(|| relay.url(), RelayProcess::url),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_start = relay.rss_kib();
    let url = Arc::new(Mutex::new(relay.url()));

    // Register everyone.
    let pairs = (args.devices / 2).max(1);
    let devices: Vec<Arc<Device>> = (0..pairs * 2)
        .map(|i| Arc::new(Device::new(i as u64)))
        .collect();
    for d in &devices {
        drop(d.connect(&relay.url(), true).await?);
    }
    eprintln!("registered {} devices", devices.len());

    // Idle connections, for memory per connection.
    let mut idle_sockets = Vec::new();
    let mut idle_per_connection = None;
    if args.idle > 0 {
        // One device per idle connection: a device's newer connection replaces its older one
        // (close code 4001), so one device cannot hold many.
        for i in 0..args.idle {
            let idle_device = Device::new(u64::MAX - i as u64);
            idle_sockets.push(idle_device.connect(&relay.url(), true).await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_idle = relay.rss_kib();
        idle_per_connection = Some(rss_idle.saturating_sub(rss_start) as f64 / args.idle as f64);
        eprintln!("{} idle connections: relay RSS {} KiB", args.idle, rss_idle);
    }
    drop(idle_sockets);

    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let per_sender = args.messages / pairs as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut tasks = Vec::new();
    let shared = Shared {
        url: url.clone(),
        stats: stats.clone(),
        start,
    };
    for (p, pair) in devices.chunks_exact(2).enumerate() {
        let [sender, receiver] = pair else { continue };
        let receiving = Shared {
            url: receiver_url.clone(),
            ..shared.clone()
        };
        tasks.push(tokio::spawn(run_receiver(
            receiver.clone(),
            per_sender,
            receiving,
            deadline,
        )));
        tasks.push(tokio::spawn(run_sender(
            sender.clone(),
            p as u32,
            receiver.address,
            per_sender,
            args.clone(),
            shared.clone(),
        )));
    }

    // Crash mode: kill and restart the relay `kills` times while traffic flows.
    let mut rss_peak = 0;
    let mut kills_done = 0;
    let kill_every = Duration::from_millis(700);
    let mut last_kill = Instant::now();
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_peak = rss_peak.max(relay.rss_kib());
        relay.check_alive()?;
        if let Some(second) = second.as_mut() {
            second.check_alive()?;
        }
        if kills_done < args.kills && last_kill.elapsed() >= kill_every {
            relay.kill();
            relay = RelayProcess::start(&bin, &data_dir, &extra)?;
            if let Ok(mut u) = url.lock() {
                *u = relay.url();
            }
            // On SQLite the receivers use the restarted relay too.
            if second.is_none()
                && let Ok(mut u) = receiver_url.lock()
            {
                *u = relay.url();
            }
            kills_done += 1;
            last_kill = Instant::now();
            eprintln!(
                "killed and restarted the relay ({kills_done}/{})",
                args.kills
            );
        }
    }
    let elapsed = start.elapsed();
    relay.kill();
    if let Some(mut second) = second {
        second.kill();
    }

    let sent = stats.sent.load(Ordering::Relaxed);
    let acked_ids = stats
        .acked_ids
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let delivered = stats
        .delivered
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    let lost = acked_ids
        .iter()
        .filter(|id| !delivered.contains_key(id))
        .count();
    let duplicates: u32 = delivered.values().map(|n| n - 1).sum();
    let unique = delivered.len() as u64;
    let offered = match (args.rate, args.in_step) {
        (0, _) => "as fast as acks allow".to_owned(),
        (r, false) => format!("{r} msgs/s steady"),
        (r, true) => format!("{r} msgs/s in step"),
    };
    println!(
        "devices {}, messages {}, in flight {}, payload {} B, offered {offered}, kills {kills_done}",
        devices.len(),
        per_sender * pairs as u64,
        args.in_flight,
        args.size
    );
    println!(
        "throughput: {:.0} msgs/s delivered ({unique} in {:.2} s)",
        unique as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("{}", latency_line("send→ack", &stats.ack_latency_us));
    println!(
        "{}",
        latency_line("send→deliver", &stats.deliver_latency_us)
    );
    println!("relay RSS: start {rss_start} KiB, peak under load {rss_peak} KiB");
    if let Some(per) = idle_per_connection {
        println!(
            "relay RSS per idle connection: {per:.1} KiB ({} connections)",
            args.idle
        );
    }
    println!(
        "sent {sent}, acked {}, delivered {unique}, lost {lost}, duplicated {duplicates}",
        acked_ids.len()
    );
    let delivered_rate = unique as f64 / elapsed.as_secs_f64();
    if args.rate > 0 && delivered_rate < 0.95 * args.rate as f64 {
        println!(
            "warning: the offered {} msgs/s was not kept ({delivered_rate:.0} delivered): \
             latencies count from when each message was due, so they include that wait; \
             give more --in-flight or a lower --rate",
            args.rate
        );
    }
    if kills_done < args.kills {
        println!(
            "FAIL: only {kills_done} of {} kills happened before the run ended (one every \
             0.7 s): send more --messages",
            args.kills
        );
        return Ok(false);
    }
    Ok(lost == 0)
}
