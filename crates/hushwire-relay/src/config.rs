//! The relay's configuration: one struct, read from (in increasing precedence) built-in
//! defaults, a TOML file (`--config`), `HUSHWIRE_RELAY_*` environment variables and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use hushwire_proto::clinic::ClinicLink;
use serde::{Deserialize, Serialize};

use crate::storage::RegistrationPolicy;

/// Settings as given on the command line or in the environment (all optional: unset ones fall
/// back to the file, then to the defaults).
#[derive(Args, Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Settings {
    /// Address to listen on. Non-loopback addresses require TLS in front (see
    /// --allow-plaintext-non-loopback). Default: 127.0.0.1:7700.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` (and `/healthz`) on this address instead of the main one, so that
    /// metrics need not be reachable where clients connect (plain HTTP). Default: on the main
    /// address.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory for the embedded SQLite database and the audit key (created if missing).
    /// Default: ./hushwire-relay-data.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://…). When set, PostgreSQL replaces the embedded SQLite store,
    /// so several relay instances can share one database.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL schema to use (created if missing); default: the connection's search path.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Who may register: `open`, or `invite` (single-use tokens from `hushwire-relay invite`).
    /// Default: open. A clinic deployment reachable over a network should use `invite`.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_REGISTRATION", value_enum)]
    pub registration: Option<RegistrationPolicy>,
    /// Days an undelivered envelope is kept before it expires. Default: 30.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_RETENTION_DAYS")]
    pub retention_days: Option<u64>,
    /// Most envelopes waiting for one device, from all senders together. Default: 10000.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_MAILBOX_QUOTA")]
    pub mailbox_quota: Option<u32>,
    /// Most payload bytes waiting for one device, from all senders together. Default:
    /// 268435456 (256 MiB).
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_MAILBOX_BYTES")]
    pub mailbox_bytes: Option<u64>,
    /// Most envelopes one sender may have waiting in one device's mailbox (its share).
    /// Default: 1000.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_SENDER_QUOTA")]
    pub sender_quota: Option<u32>,
    /// Most payload bytes one sender may have waiting in one device's mailbox. Default:
    /// 33554432 (32 MiB).
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_SENDER_QUOTA_BYTES")]
    pub sender_quota_bytes: Option<u64>,
    /// Envelopes per second one sender may send to one recipient (bursts of twice this).
    /// Default: 50.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_SENDER_RATE")]
    pub sender_rate: Option<u32>,
    /// Payload bytes per second one sender may send to one recipient (bursts of twice this;
    /// at least 49152, so that one largest envelope fits a burst). Default: 4194304 (4 MiB/s).
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_SENDER_BYTE_RATE")]
    pub sender_byte_rate: Option<u64>,
    /// Bundle fetches per minute one device may make (bursts of this many). Default: 60.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_FETCH_RATE")]
    pub fetch_rate: Option<u32>,
    /// One-time prekeys per minute the relay hands out of one device's bundle (bursts of this
    /// many); fetches beyond it get a bundle without one-time keys. Default: 20.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_TARGET_PREKEY_RATE")]
    pub target_prekey_rate: Option<u32>,
    /// Registration attempts per minute from one IP address (bursts of this many). Default: 20.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_REGISTRATION_RATE")]
    pub registration_rate: Option<u32>,
    /// `TakeProvisioning` requests per minute from one IP address (bursts of this many):
    /// device linking is allowed before login, so this bounds guessing at slots. Default: 30.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_PROVISIONING_RATE")]
    pub provisioning_rate: Option<u32>,
    /// Seconds the relay keeps a provisioning message (device linking, `docs/clinic.md` §5.1)
    /// before it is forgotten: 1 to 600. Default: 600 (ten minutes).
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_PROVISIONING_TTL_SECS")]
    pub provisioning_ttl_secs: Option<u64>,
    /// Most simultaneous WebSocket connections (HTTP 503 beyond). The relay raises its
    /// open-file limit at start-up and lowers this, with a warning, if the limit leaves too
    /// little headroom. Default: 20000.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections one IP address may hold before its device authenticates (HTTP
    /// requests not yet upgraded, challenges not yet answered); more are closed at once.
    /// Default: 128.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_MAX_PENDING_PER_ADDRESS")]
    pub max_pending_per_address: Option<usize>,
    /// Most not-yet-authenticated connections from all addresses together. Default: 4096.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_MAX_PENDING")]
    pub max_pending: Option<usize>,
    /// Seconds a new connection has to send its HTTP request headers. Default: 10.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds without traffic before a connection is pinged, and twice that before it is
    /// closed. Default: 60.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds one write to a connection may take; a peer that does not read for that long is
    /// closed (its envelopes stay in the mailbox). Default: 10.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_WRITE_TIMEOUT_SECS")]
    pub write_timeout_secs: Option<u64>,
    /// Frames per second one device may send (token bucket; bursts of twice this). Default: 500.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_DEVICE_RATE")]
    pub device_rate: Option<u32>,
    /// New connections per second from one IP address (bursts of twice this; HTTP 429
    /// beyond). Default: 50.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_ADDRESS_RATE")]
    pub address_rate: Option<u32>,
    /// Seconds between sweeps that delete envelopes past retention. Default: 60.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_EXPIRY_INTERVAL_SECS")]
    pub expiry_interval_secs: Option<u64>,
    /// No longer used: logins were bound to a hash of this name, and are now bound to the
    /// relay key (--relay-key-file). Still accepted, so existing configurations keep loading.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_NAME", hide = true)]
    pub relay_name: Option<String>,
    /// The relay identity key file: the deployment's Ed25519 key, which signs every challenge
    /// and which clients pin. Every instance of one deployment must be given the same file.
    /// Created (mode 0600) on first start with SQLite; with --database-url it must exist
    /// (`hushwire-relay relay-key` creates it). Default: <data-dir>/relay-key.
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_KEY_FILE")]
    pub relay_key_file: Option<PathBuf>,
    /// The clinic this relay serves: its clinic link (`hushwire-clinic:…`, as the clinic
    /// publishes it). The relay takes the clinic's organization key from it and then enforces
    /// roles: agent certificates at registration, admin-only frames (suspend, wipe, revocation
    /// lists). Also read from HUSHWIRE_CLINIC_LINK. Default: none (no clinic: certificates and
    /// admin frames are refused).
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_CLINIC_LINK")]
    pub clinic_link: Option<String>,
    /// TLS certificate chain (PEM). With --tls-key, the relay serves wss:// itself.
    #[arg(
        long,
        global = true,
        env = "HUSHWIRE_RELAY_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        global = true,
        env = "HUSHWIRE_RELAY_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// A web origin (`https://clinic.example`, `https://clinic.example:8443`: scheme, host and
    /// optional port, nothing else) whose pages may open a WebSocket to this relay; repeat the
    /// flag for each site (comma-separated in the environment, a list in the file). A
    /// WebSocket request with an `Origin` header not listed is refused (HTTP 403); requests
    /// without one (native clients) are not affected. Default: none, so every browser page is
    /// refused: a clinic embedding its widget names its site here.
    #[arg(
        long = "allow-origin",
        global = true,
        value_name = "ORIGIN",
        env = "HUSHWIRE_RELAY_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// Serve the built web widget and console from this directory, read-only (no listings;
    /// HTML never cached; a content security policy without inline script). Default: none
    /// (the relay serves no files).
    #[arg(long, global = true, env = "HUSHWIRE_RELAY_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// DANGER: serve plaintext WebSocket on a non-loopback address. Only for a TLS-terminating
    /// proxy on a trusted network segment.
    #[arg(
        long,
        global = true,
        env = "HUSHWIRE_RELAY_ALLOW_PLAINTEXT_NON_LOOPBACK"
    )]
    #[serde(default)]
    pub allow_plaintext_non_loopback: bool,
}

/// The resolved configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Separate metrics address.
    pub metrics_listen: Option<SocketAddr>,
    /// SQLite data directory.
    pub data_dir: PathBuf,
    /// PostgreSQL URL, if PostgreSQL is used. Never printed (it may hold a password).
    #[serde(skip)]
    pub database_url: Option<String>,
    /// PostgreSQL schema.
    pub database_schema: Option<String>,
    /// Registration policy.
    pub registration: RegistrationPolicy,
    /// Retention in days.
    pub retention_days: u64,
    /// Envelopes waiting per device, all senders.
    pub mailbox_quota: u32,
    /// Payload bytes waiting per device, all senders.
    pub mailbox_bytes: u64,
    /// Envelopes one sender may have waiting per device.
    pub sender_quota: u32,
    /// Payload bytes one sender may have waiting per device.
    pub sender_quota_bytes: u64,
    /// Envelopes per second per (sender, recipient).
    pub sender_rate: u32,
    /// Payload bytes per second per (sender, recipient).
    pub sender_byte_rate: u64,
    /// Bundle fetches per minute per requesting device.
    pub fetch_rate: u32,
    /// One-time prekeys handed out per minute per target device.
    pub target_prekey_rate: u32,
    /// Registrations per minute per IP address.
    pub registration_rate: u32,
    /// Provisioning takes per minute per IP address.
    pub provisioning_rate: u32,
    /// Seconds a provisioning message is kept (1 to [`MAX_PROVISIONING_TTL_SECS`]).
    pub provisioning_ttl_secs: u64,
    /// Connection cap.
    pub max_connections: usize,
    /// Pending connections per IP address.
    pub max_pending_per_address: usize,
    /// Pending connections in total.
    pub max_pending: usize,
    /// HTTP header read timeout in seconds.
    pub header_read_timeout_secs: u64,
    /// Idle timeout in seconds.
    pub idle_timeout_secs: u64,
    /// Write timeout in seconds.
    pub write_timeout_secs: u64,
    /// Per-device frame rate.
    pub device_rate: u32,
    /// Per-IP unauthenticated frame rate.
    pub address_rate: u32,
    /// Seconds between expiry sweeps.
    pub expiry_interval_secs: u64,
    /// The relay key file; `None`: `<data_dir>/relay-key`.
    pub relay_key_file: Option<PathBuf>,
    /// The clinic link (public: the clinic's organization key, name and relay URL).
    pub clinic_link: Option<String>,
    /// TLS certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key.
    pub tls_key: Option<PathBuf>,
    /// Web origins allowed to open a WebSocket (as given; checked by [`Config::check`]).
    pub allow_origin: Vec<String>,
    /// Directory of static web files, if any.
    pub web_dir: Option<PathBuf>,
    /// Plaintext on non-loopback allowed.
    pub allow_plaintext_non_loopback: bool,
    /// Settings given out of their range and the value used instead, and settings in range
    /// but rarely meant (`retention_days` 0), in words: the relay logs each as a warning at
    /// start-up, so a typo such as `--sender-rate 0` is seen.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The least `sender_byte_rate`: its burst (twice the rate) must hold one largest envelope
/// payload (96 KiB), or such an envelope could never be sent.
pub const MIN_SENDER_BYTE_RATE: u64 = 48 * 1024;

/// The longest a provisioning message is kept (and the default): ten minutes
/// (`docs/clinic.md` §5.1). A linking code is meant to be used at once.
pub const MAX_PROVISIONING_TTL_SECS: u64 = 600;

/// The longest an undelivered envelope is kept (`retention_days`): 10 years. Longer would only
/// let a typo keep mail forever; the clinic's archive has its own retention (§7.4 of
/// `conversations.md`).
pub const MAX_RETENTION_DAYS: u64 = 3650;

/// The environment variable clinic tools share for the clinic link; the relay reads it after
/// `--clinic-link` and `HUSHWIRE_RELAY_CLINIC_LINK`.
pub const CLINIC_LINK_ENV: &str = "HUSHWIRE_CLINIC_LINK";

/// The default port: unassigned by IANA, easy to remember.
pub const DEFAULT_PORT: u16 = 7700;

impl Settings {
    /// Fills unset values from `file`, then from defaults.
    pub fn resolve(self, file: Settings) -> Config {
        let mut config = Config {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("hushwire-relay-data")),
            database_url: self.database_url.or(file.database_url),
            database_schema: self.database_schema.or(file.database_schema),
            registration: self
                .registration
                .or(file.registration)
                .unwrap_or(RegistrationPolicy::Open),
            retention_days: self.retention_days.or(file.retention_days).unwrap_or(30),
            mailbox_quota: self.mailbox_quota.or(file.mailbox_quota).unwrap_or(10_000),
            mailbox_bytes: self
                .mailbox_bytes
                .or(file.mailbox_bytes)
                .unwrap_or(256 << 20),
            sender_quota: self.sender_quota.or(file.sender_quota).unwrap_or(1000),
            sender_quota_bytes: self
                .sender_quota_bytes
                .or(file.sender_quota_bytes)
                .unwrap_or(32 << 20),
            sender_rate: self.sender_rate.or(file.sender_rate).unwrap_or(50),
            sender_byte_rate: self
                .sender_byte_rate
                .or(file.sender_byte_rate)
                .unwrap_or(4 << 20),
            fetch_rate: self.fetch_rate.or(file.fetch_rate).unwrap_or(60),
            target_prekey_rate: self
                .target_prekey_rate
                .or(file.target_prekey_rate)
                .unwrap_or(20),
            registration_rate: self
                .registration_rate
                .or(file.registration_rate)
                .unwrap_or(20),
            provisioning_rate: self
                .provisioning_rate
                .or(file.provisioning_rate)
                .unwrap_or(30),
            provisioning_ttl_secs: self
                .provisioning_ttl_secs
                .or(file.provisioning_ttl_secs)
                .unwrap_or(MAX_PROVISIONING_TTL_SECS),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(20_000),
            max_pending_per_address: self
                .max_pending_per_address
                .or(file.max_pending_per_address)
                .unwrap_or(128),
            max_pending: self.max_pending.or(file.max_pending).unwrap_or(4096),
            header_read_timeout_secs: self
                .header_read_timeout_secs
                .or(file.header_read_timeout_secs)
                .unwrap_or(10),
            idle_timeout_secs: self
                .idle_timeout_secs
                .or(file.idle_timeout_secs)
                .unwrap_or(60),
            write_timeout_secs: self
                .write_timeout_secs
                .or(file.write_timeout_secs)
                .unwrap_or(10),
            device_rate: self.device_rate.or(file.device_rate).unwrap_or(500),
            address_rate: self.address_rate.or(file.address_rate).unwrap_or(50),
            expiry_interval_secs: self
                .expiry_interval_secs
                .or(file.expiry_interval_secs)
                .unwrap_or(60),
            relay_key_file: self.relay_key_file.or(file.relay_key_file),
            // The flag, HUSHWIRE_RELAY_CLINIC_LINK, HUSHWIRE_CLINIC_LINK (the name clinic tools
            // share), then the file.
            clinic_link: self
                .clinic_link
                .or_else(|| {
                    std::env::var(CLINIC_LINK_ENV)
                        .ok()
                        .filter(|s| !s.trim().is_empty())
                })
                .or(file.clinic_link),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            allow_origin: if self.allow_origin.is_empty() {
                file.allow_origin
            } else {
                self.allow_origin
            },
            web_dir: self.web_dir.or(file.web_dir),
            allow_plaintext_non_loopback: self.allow_plaintext_non_loopback
                || file.allow_plaintext_non_loopback,
            warnings: Vec::new(),
        };
        config.keep_in_range();
        config
    }
}

impl Config {
    /// Brings settings below their least useful value (a rate or limit of 0 would refuse
    /// everything; a byte rate under [`MIN_SENDER_BYTE_RATE`] could never pass one largest
    /// envelope) or above their greatest into range, noting each in `adjusted`.
    fn keep_in_range(&mut self) {
        macro_rules! at_least {
            ($($field:ident >= $min:expr),* $(,)?) => {$(
                if self.$field < $min {
                    self.warnings.push(format!(
                        "{} {} is below its least value: using {}",
                        stringify!($field), self.$field, $min
                    ));
                    self.$field = $min;
                }
            )*};
        }
        at_least!(
            sender_rate >= 1,
            sender_byte_rate >= MIN_SENDER_BYTE_RATE,
            fetch_rate >= 1,
            target_prekey_rate >= 1,
            registration_rate >= 1,
            provisioning_rate >= 1,
            provisioning_ttl_secs >= 1,
            max_pending_per_address >= 1,
            max_pending >= 1,
            max_connections >= 1,
            header_read_timeout_secs >= 1,
            idle_timeout_secs >= 1,
            write_timeout_secs >= 1,
            device_rate >= 1,
            address_rate >= 1,
            expiry_interval_secs >= 1,
        );
        if self.retention_days == 0 {
            // Kept: a test deployment may want mail expired at once; said, as a production
            // relay given 0 by mistake would delete undelivered mail within a sweep.
            self.warnings.push(
                "retention_days 0: undelivered envelopes are deleted at the next expiry sweep \
                 (every expiry_interval_secs)"
                    .into(),
            );
        }
        if self.retention_days > MAX_RETENTION_DAYS {
            self.warnings.push(format!(
                "retention_days {} is above its greatest value: using {MAX_RETENTION_DAYS}",
                self.retention_days
            ));
            self.retention_days = MAX_RETENTION_DAYS;
        }
        if self.provisioning_ttl_secs > MAX_PROVISIONING_TTL_SECS {
            self.warnings.push(format!(
                "provisioning_ttl_secs {} is above its greatest value: using \
                 {MAX_PROVISIONING_TTL_SECS}",
                self.provisioning_ttl_secs
            ));
            self.provisioning_ttl_secs = MAX_PROVISIONING_TTL_SECS;
        }
    }

    /// Where the relay key file is (`--relay-key-file`, else `<data_dir>/relay-key`).
    pub fn relay_key_path(&self) -> PathBuf {
        self.relay_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("relay-key"))
    }

    /// The clinic, if a clinic link is configured; an error names why a given link is unusable
    /// (its signature is checked as it is parsed).
    pub fn clinic(&self) -> Result<Option<ClinicLink>, String> {
        self.clinic_link
            .as_deref()
            .map(|text| {
                text.parse::<ClinicLink>()
                    .map_err(|e| format!("--clinic-link is not a valid clinic link: {e}"))
            })
            .transpose()
    }

    /// The allowed web origins, each in its serialized form ([`parse_origin`]); an error names
    /// the first malformed one.
    pub fn allowed_origins(&self) -> Result<Vec<String>, String> {
        self.allow_origin
            .iter()
            .map(|o| {
                parse_origin(o)
                    .map_err(|e| format!("--allow-origin {o:?} is not a web origin: {e}"))
            })
            .collect()
    }

    /// Refuses configurations that would be unsafe to run.
    pub fn check(&self) -> Result<(), String> {
        self.clinic()?;
        self.allowed_origins()?;
        if let Some(dir) = &self.web_dir
            && !dir.is_dir()
        {
            return Err(format!("--web-dir {} is not a directory", dir.display()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("TLS needs both --tls-cert and --tls-key".into());
        }
        let tls = self.tls_cert.is_some();
        if !tls && !self.listen.ip().is_loopback() && !self.allow_plaintext_non_loopback {
            return Err(format!(
                "refusing to serve plaintext WebSocket on non-loopback address {}: give \
                 --tls-cert and --tls-key, or listen on 127.0.0.1, or (only behind a \
                 TLS-terminating proxy) pass --allow-plaintext-non-loopback",
                self.listen
            ));
        }
        Ok(())
    }
}

/// A web origin in its RFC 6454 serialization: `scheme://host[:port]` with the scheme and host
/// in lower case and the scheme's default port (80, 443) left out. Only `http` and `https`
/// origins with a DNS name, an IPv4 address or a bracketed IPv6 address are accepted; a path,
/// a query, user information or a trailing slash is an error, so that a configured origin
/// means exactly one site. The `Origin` header a browser sends is put through the same
/// function and compared whole, never by prefix.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("expected scheme://host[:port]")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(format!("scheme {scheme:?} is not http or https")),
    };
    if rest.is_empty() {
        return Err("no host".into());
    }
    if let Some(c) = rest
        .chars()
        .find(|c| matches!(c, '/' | '?' | '#' | '@' | '\\'))
    {
        return Err(format!(
            "{c:?} is not allowed: an origin is only scheme://host[:port], without a path"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (address, after) = v6.split_once(']').ok_or("unclosed [ in an IPv6 host")?;
        address
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{address:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 host")?),
        };
        (format!("[{}]", address.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!("{host:?} is not a host name or address"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n = if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse::<u16>().ok().filter(|n| *n != 0)
            } else {
                None
            };
            Some(n.ok_or_else(|| format!("{p:?} is not a port"))?)
        }
    };
    Ok(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::{MAX_PROVISIONING_TTL_SECS, MIN_SENDER_BYTE_RATE, Settings, parse_origin};

    #[test]
    fn settings_out_of_range_are_brought_in_and_named() {
        let given = Settings {
            retention_days: Some(0),
            sender_rate: Some(0),
            sender_byte_rate: Some(1),
            provisioning_ttl_secs: Some(MAX_PROVISIONING_TTL_SECS + 1),
            idle_timeout_secs: Some(30),
            ..Settings::default()
        };
        let config = given.resolve(Settings::default());
        assert_eq!(config.sender_rate, 1);
        assert_eq!(config.sender_byte_rate, MIN_SENDER_BYTE_RATE);
        assert_eq!(config.provisioning_ttl_secs, MAX_PROVISIONING_TTL_SECS);
        assert_eq!(config.idle_timeout_secs, 30, "a setting in range is kept");
        assert_eq!(config.retention_days, 0, "0 is kept, with a warning");
        assert_eq!(config.warnings.len(), 4, "{:?}", config.warnings);
        assert!(config.warnings[0].starts_with("sender_rate 0 is below"));
        assert!(config.warnings[2].starts_with("retention_days 0: undelivered envelopes"));
        assert!(config.warnings[3].contains("above its greatest value: using 600"));
        let long = Settings {
            retention_days: Some(99_999_999_999),
            ..Settings::default()
        }
        .resolve(Settings::default());
        assert_eq!(long.retention_days, super::MAX_RETENTION_DAYS);
        assert!(
            Settings::default()
                .resolve(Settings::default())
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn origins_are_serialized_and_malformed_ones_refused() {
        assert_eq!(
            parse_origin("HTTPS://Clinic.Example").as_deref(),
            Ok("https://clinic.example")
        );
        assert_eq!(
            parse_origin("https://clinic.example:443").as_deref(),
            Ok("https://clinic.example")
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8080").as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        assert_eq!(
            parse_origin("https://[::1]:9").as_deref(),
            Ok("https://[::1]:9")
        );
        for bad in [
            "clinic.example",
            "https://clinic.example/",
            "https://clinic.example/widget",
            "ftp://clinic.example",
            "https://user@clinic.example",
            "https://clinic.example:0",
            "https://clinic.example:99999",
            "https://",
            "https://-bad.example",
            "https://clinic..example",
            "null",
            "*",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} was accepted");
        }
    }
}
