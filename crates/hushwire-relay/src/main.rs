//! `hushwire-relay`: run the relay, or administer it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hushwire_proto::audit::{AuditCheckpoint, AuditFault, AuditReport, AuditVerifier};
use hushwire_proto::codec::Codec;
use hushwire_relay::audit_log::AuditIdentity;
use hushwire_relay::config::{Config, Settings};
use hushwire_relay::storage::{PostgresStore, SqliteStore, Store};
use sha2::Digest as _;

/// Hushwire's store-and-forward relay. It carries end-to-end encrypted envelopes between
/// devices and cannot read them.
///
/// With no arguments it listens on 127.0.0.1:7700 and keeps its data in SQLite under
/// ./hushwire-relay-data. Settings come from flags, then HUSHWIRE_RELAY_* environment
/// variables, then the --config TOML file, then defaults (each setting names its default).
///
/// Logging: HUSHWIRE_RELAY_LOG, else RUST_LOG, is a tracing filter (default `info`; e.g.
/// `warn,hushwire_relay=debug`). Colour only when stderr is a terminal and NO_COLOR is unset.
///
/// Examples:
///   hushwire-relay                                   # serve with defaults
///   hushwire-relay --registration invite             # only invited devices may register
///   hushwire-relay invite --valid-days 7             # print a single-use invite token
///   hushwire-relay --database-url postgres://relay@db/hushwire   # one of several instances
///   hushwire-relay --allow-origin https://clinic.example --web-dir ./web/dist   # browsers
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// TOML file with any of the settings below (keys in snake_case, e.g. `listen = "127.0.0.1:7700"`).
    #[arg(long, env = "HUSHWIRE_RELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log line format on stderr: `text` or `json` (one JSON object per line).
    #[arg(long, env = "HUSHWIRE_RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Issue a single-use invite token for registration (prints it once; only its hash is
    /// stored).
    Invite {
        /// Days until the token expires: 1 to 365. The relay must have served this --data-dir
        /// (or --database-url) before: a directory without its store is refused, never created.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=365))]
        valid_days: u64,
    },
    /// Create the relay key file if it does not exist yet (mode 0600), and print its
    /// fingerprint: the deployment's identity, which clients pin at registration. Run it once
    /// for a PostgreSQL deployment and give every instance the file (--relay-key-file).
    RelayKey,
    /// Audit chain commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify this instance's audit chain: every record's hash link and every checkpoint's
    /// signature by the relay's audit key (in --data-dir: its audit key, and its SQLite store
    /// unless --database-url is given). A directory without a relay store is refused, never
    /// created. Exits 1 and names the first fault (which record was modified, removed,
    /// inserted or reordered, or a truncation).
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let file = match &cli.config {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<Settings>(&t).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read config file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => Settings::default(),
    };
    let config = cli.settings.resolve(file);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Invite { valid_days } => invite(config, valid_days).await,
            Command::RelayKey => relay_key(&config),
            Command::Audit {
                command: AuditCommand::Verify { json },
            } => audit_verify(config, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by HUSHWIRE_RELAY_LOG, else RUST_LOG, else `info`; colour only on
/// a terminal without NO_COLOR; `json`: one JSON object per line.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUSHWIRE_RELAY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

async fn open_sqlite(config: &Config) -> Result<SqliteStore, String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let path = config.data_dir.join("relay.db");
    SqliteStore::open(&path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

async fn open_postgres(config: &Config, url: &str) -> Result<PostgresStore, String> {
    PostgresStore::connect(url, config.database_schema.as_deref())
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))
}

async fn invite(config: Config, valid_days: u64) -> Result<(), String> {
    let mut token = [0u8; 24];
    getrandom::fill(&mut token).map_err(|e| format!("no randomness: {e}"))?;
    let token_text = hex::encode(token);
    let hash: [u8; 32] = sha2::Sha256::digest(token_text.as_bytes()).into();
    let expires = now_ms().saturating_add(valid_days.saturating_mul(86_400_000));
    match &config.database_url {
        Some(url) => {
            open_postgres(&config, url)
                .await?
                .create_invite(hash, expires)
                .await
        }
        None => {
            // A token written into a store no relay serves (a mistyped --data-dir) would be
            // refused at registration with no clue why: refuse it here instead.
            if !config.data_dir.join("relay.db").exists() {
                return Err(format!(
                    "no relay store in {}: give the --data-dir the relay serves (it creates its \
                     store at its first start)",
                    config.data_dir.display()
                ));
            }
            open_sqlite(&config)
                .await?
                .create_invite(hash, expires)
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    println!("{token_text}");
    eprintln!("single-use invite, valid for {valid_days} days; give it to one device's owner");
    Ok(())
}

fn relay_key(config: &Config) -> Result<(), String> {
    let path = config.relay_key_path();
    let (key, created) = hushwire_relay::relay_key::load_or_create(&path)?;
    println!("{}", hushwire_relay::relay_key::public(&key).fingerprint());
    eprintln!(
        "{} relay key {}: give every instance of this deployment this same file \
         (--relay-key-file); clients pin the fingerprint above",
        if created {
            "created the"
        } else {
            "the existing"
        },
        path.display()
    );
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Locks the data directory for as long as this process serves: one data directory, one
/// instance. The directory holds the instance's audit key and chain (and, on SQLite, its
/// database): two relays on one directory each appended to the one chain from their own head in
/// memory, so about half the records were lost while `audit verify` still passed, and the
/// SQLite mailbox delivered some envelopes twice. The lock is an advisory lock on the directory
/// itself (on Unix), so deleting a file cannot lift it; `<data-dir>/relay.lock` holds the
/// holder's process id for the refusal's message. The operating system releases the lock when
/// the process ends, however it ends, so a crash leaves nothing to clean up.
fn lock_data_dir(dir: &std::path::Path) -> Result<(std::fs::File, std::fs::File), String> {
    use std::io::{Read as _, Write as _};
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let pid_path = dir.join("relay.lock");
    #[cfg(unix)]
    let locked = std::fs::File::open(dir);
    #[cfg(not(unix))]
    let locked = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("relay.dirlock"));
    let locked = locked.map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    match fs4::FileExt::try_lock(&locked) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            if let Ok(file) = std::fs::File::open(&pid_path) {
                let _ = file.take(32).read_to_string(&mut holder);
            }
            let pid: String = holder.chars().filter(char::is_ascii_digit).collect();
            let who = if pid.is_empty() {
                "another hushwire-relay".to_owned()
            } else {
                format!("another hushwire-relay (process {pid})")
            };
            return Err(format!(
                "{who} is serving from the data directory {}: each instance needs its own \
                 (it holds the instance's audit chain and, without --database-url, its \
                 database); stop that one, or give this one another --data-dir",
                dir.display()
            ));
        }
        Err(fs4::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", dir.display()));
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut pid_file = options
        .open(&pid_path)
        .map_err(|e| format!("cannot open {}: {e}", pid_path.display()))?;
    writeln!(pid_file, "{}", std::process::id())
        .map_err(|e| format!("cannot write {}: {e}", pid_path.display()))?;
    Ok((locked, pid_file))
}

async fn serve(config: Config) -> Result<(), String> {
    let _lock = lock_data_dir(&config.data_dir)?;
    match config.database_url.clone() {
        Some(url) => {
            let store = open_postgres(&config, &url).await?;
            let pool = store.pool().clone();
            run(store, config, Some(pool)).await
        }
        None => {
            let store = open_sqlite(&config).await?;
            run(store, config, None).await
        }
    }
}

async fn audit_verify(config: Config, json: bool) -> Result<(), String> {
    // Verifying must not create what it verifies: a wrong directory is an error, not an
    // empty chain that "verifies".
    let identity = AuditIdentity::load(&config.data_dir)?;
    if config.database_url.is_none() && !config.data_dir.join("relay.db").exists() {
        return Err(format!(
            "no relay store at {}: relay.db is missing (give --data-dir, or --database-url)",
            config.data_dir.display()
        ));
    }
    let outcome = match &config.database_url {
        Some(url) => verify_chain(&open_postgres(&config, url).await?, &identity).await?,
        None => verify_chain(&open_sqlite(&config).await?, &identity).await?,
    };
    let key = hex::encode(identity.key.verifying_key().as_bytes());
    let chain = hex::encode(identity.chain_id);
    match outcome {
        Ok(report) => {
            if json {
                println!(
                    "{{\"ok\":true,\"chain\":\"{chain}\",\"signer\":\"{key}\",\"records\":{},\"checkpoints\":{},\"unsigned_tail\":{},\"head\":\"{}\"}}",
                    report.records,
                    report.checkpoints,
                    report.unsigned_tail,
                    hex::encode(report.head_hash)
                );
            } else {
                println!(
                    "audit chain {chain} verifies: {} records, {} checkpoints signed by {key}",
                    report.records, report.checkpoints
                );
                if report.unsigned_tail > 0 {
                    println!(
                        "note: the last {} records are not yet covered by a checkpoint",
                        report.unsigned_tail
                    );
                }
            }
            Ok(())
        }
        Err(fault) => {
            if json {
                println!("{{\"ok\":false,\"chain\":\"{chain}\",\"fault\":\"{fault}\"}}");
            }
            Err(format!("audit chain {chain} does NOT verify: {fault}"))
        }
    }
}

/// Streams the stored chain through the verifier, 1000 records at a time.
async fn verify_chain<S: Store>(
    store: &S,
    identity: &AuditIdentity,
) -> Result<Result<AuditReport, AuditFault>, String> {
    let mut verifier = AuditVerifier::new(identity.chain_id, identity.key.verifying_key());
    let mut checkpoints = Vec::new();
    for bytes in store
        .audit_checkpoints(identity.chain_id)
        .await
        .map_err(|e| e.to_string())?
    {
        match AuditCheckpoint::from_bytes(&bytes) {
            Ok(c) => checkpoints.push(c),
            Err(e) => return Err(format!("a stored checkpoint does not decode: {e}")),
        }
    }
    checkpoints.sort_by_key(|c| c.count);
    let mut next_checkpoint = checkpoints.into_iter().peekable();
    let mut from = 0u64;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    loop {
        let batch = store
            .audit_records(identity.chain_id, from, 1000)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            break;
        }
        for bytes in &batch {
            if let Err(fault) = verifier.push_encoded_record(bytes) {
                return Ok(Err(fault));
            }
            from += 1;
            while let Some(c) = next_checkpoint.next_if(|c| c.count <= from) {
                if let Err(fault) = verifier.push_checkpoint(&c) {
                    return Ok(Err(fault));
                }
            }
        }
        // Progress on a terminal only: redirected, `\r` makes one endless line.
        if progress {
            eprint!("\rverified {from} records");
        }
    }
    if progress {
        eprintln!();
    }
    for c in next_checkpoint {
        if let Err(fault) = verifier.push_checkpoint(&c) {
            return Ok(Err(fault));
        }
    }
    Ok(verifier.finish())
}

async fn run<S: Store + Clone>(
    store: S,
    config: Config,
    listen_pool: Option<sqlx::PgPool>,
) -> Result<(), String> {
    let running = hushwire_relay::server::start(store, config, listen_pool).await?;
    tracing::info!(settings = %settings_line(&running.config), "configuration");
    match running.metrics_address {
        None => tracing::info!(
            "listening on {} (health: /healthz, metrics: /metrics)",
            running.url()
        ),
        Some(at) => {
            tracing::info!("listening on {} (health: /healthz)", running.url());
            tracing::info!("metrics on http://{at}/metrics (not on the main address)");
        }
    }
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; finishing writes in progress");
    running.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The settings as one line of `key=value` pairs (the database URL is never printed).
fn settings_line(config: &Config) -> String {
    toml::to_string(config)
        .map(|s| s.lines().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command};
    use clap::{CommandFactory, Parser};

    /// Server settings are accepted before or after a subcommand (`invite --data-dir D` and
    /// `--data-dir D invite` mean the same), and each is given once.
    #[test]
    fn settings_go_before_or_after_the_subcommand() {
        for args in [
            ["hushwire-relay", "invite", "--data-dir", "d"],
            ["hushwire-relay", "--data-dir", "d", "invite"],
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            assert!(matches!(cli.command, Some(Command::Invite { .. })));
            assert_eq!(
                cli.settings.data_dir.as_deref(),
                Some(std::path::Path::new("d"))
            );
        }
        let cli = Cli::try_parse_from(["hushwire-relay", "serve", "--listen", "127.0.0.1:1"])
            .expect("parses");
        assert_eq!(cli.settings.listen.map(|a| a.port()), Some(1));
        let cli = Cli::try_parse_from(["hushwire-relay", "audit", "verify", "--data-dir", "d"])
            .expect("parses");
        assert_eq!(
            cli.settings.data_dir.as_deref(),
            Some(std::path::Path::new("d"))
        );
        Cli::command().debug_assert();
        for days in ["0", "366", "999999999999"] {
            assert!(
                Cli::try_parse_from(["hushwire-relay", "invite", "--valid-days", days]).is_err(),
                "--valid-days {days} accepted"
            );
        }
    }
}
