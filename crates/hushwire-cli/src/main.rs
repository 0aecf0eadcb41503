//! `hushwire`: chat over Hushwire from a terminal — a thin shell over `hushwire-client`.
//!
//! Every command opens the encrypted store in `--home` (default `~/.hushwire`), does one thing
//! and exits; `chat` stays until `/quit`. Errors print `error: <message>` and exit non-zero.

#![forbid(unsafe_code)]

mod chat;
mod cli;
mod clinic;
mod common;
mod conversations;
mod devices;
mod display;
mod healing;
mod messages;
mod transcripts;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{
    AuditCommand, AuditorCommand, CertificateCommand, Cli, ClinicCommand, Command, ContactCommand,
    DevicesCommand, OrgCommand, OutboxCommand, TranscriptCommand,
};
use crate::common::{CliResult, Failure};

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let mut cli = Cli::parse();
    cli.global.label = format!("hushwire {}", cli.command.name());
    if let Ok(filter) = std::env::var("HUSHWIRE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
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
    let result = runtime.block_on(run(cli));
    // Do not wait for background tasks (a reconnect backoff, a blocked stdin read).
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(Failure { message, code }) => {
            // An error can quote a contact name or a relay's reason: escape it like any output.
            eprintln!("error: {}", display::escape_lines(&message));
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> CliResult<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Init {
            link: Some(code), ..
        } => devices::init_linked(g, &code).await,
        Command::Init { device_id, .. } => messages::init(g, device_id).await,
        Command::Register {
            relay_url,
            invite,
            certificate: Some(certificate),
            clinic,
            ..
        } => {
            clinic::register_agent(
                g,
                &relay_url,
                invite.as_deref(),
                &certificate,
                clinic.as_deref(),
            )
            .await
        }
        Command::Register {
            relay_url,
            invite,
            accept_relay_key,
            ..
        } => {
            messages::register(
                g,
                &relay_url,
                invite.as_deref(),
                accept_relay_key.as_deref(),
            )
            .await
        }
        Command::Whoami { address } => messages::whoami(g, address).await,
        Command::Contact { command } => match command {
            ContactCommand::Add {
                name,
                address,
                replace,
            } => messages::contact_add(g, &name, &address, replace).await,
            ContactCommand::List => messages::contact_list(g).await,
            ContactCommand::Rename { old, new } => messages::contact_rename(g, &old, &new).await,
            ContactCommand::Remove {
                name,
                discard_queued,
            } => messages::contact_remove(g, &name, discard_queued).await,
        },
        Command::Verify {
            name,
            confirm,
            wait,
        } => messages::verify(g, &name, confirm.as_deref(), wait).await,
        Command::Send {
            name,
            message,
            wait,
        } => messages::send(g, &name, message, wait).await,
        Command::Recv { wait } => messages::recv(g, wait).await,
        Command::Chat { name, lock_after } => chat::chat(g, &name, lock_after).await,
        Command::Transcript { command } => match command {
            TranscriptCommand::List => transcripts::list(g).await,
            TranscriptCommand::Verify { name } => transcripts::verify(g, &name, false).await,
            TranscriptCommand::Open { name } => transcripts::verify(g, &name, true).await,
            TranscriptCommand::Export {
                to,
                out,
                force,
                names,
            } => transcripts::export(g, &to, &out, force, &names).await,
        },
        Command::Auditor { command } => match command {
            AuditorCommand::Keygen { out } => transcripts::auditor_keygen(g, &out),
            AuditorCommand::Pubkey { key } => transcripts::auditor_pubkey(g, &key),
            AuditorCommand::Verify {
                export,
                key,
                exporter,
            } => transcripts::auditor_read(g, &export, &key, exporter.as_deref(), false),
            AuditorCommand::Open {
                export,
                key,
                exporter,
            } => transcripts::auditor_read(g, &export, &key, exporter.as_deref(), true),
        },
        Command::Audit {
            command: AuditCommand::Verify,
        } => transcripts::audit_verify(g).await,
        Command::Status { name: Some(name) } => healing::status(g, &name).await,
        Command::Status { name: None } => healing::relay_status(g).await,
        Command::Outbox { command } => match command {
            OutboxCommand::List => healing::outbox_list(g).await,
            OutboxCommand::Cancel { id } => healing::outbox_cancel(g, &id).await,
        },
        Command::Org { org_dir, command } => {
            let dir = org_dir.as_deref();
            match command {
                OrgCommand::Init { name, relay } => clinic::org_init(g, dir, &name, &relay),
                OrgCommand::Certify {
                    request,
                    name,
                    roles,
                    days,
                    out,
                } => clinic::org_certify(g, dir, &request, &name, roles, days, out.as_deref()),
                OrgCommand::Revoke { serial, out } => {
                    clinic::org_revoke(g, dir, serial, out.as_deref())
                }
                OrgCommand::PublishRevocations { list, wait } => {
                    clinic::publish_revocations(g, &list, wait).await
                }
                OrgCommand::ArchivePolicy { retention_days } => {
                    clinic::org_archive_policy(g, dir, retention_days)
                }
                OrgCommand::PublishArchivePolicy { policy, wait } => {
                    clinic::publish_archive_policy(g, &policy, wait).await
                }
                OrgCommand::SetRelay { relay } => clinic::org_set_relay(g, dir, &relay),
                OrgCommand::Link { no_qr } => clinic::org_link(g, dir, no_qr),
                OrgCommand::Show { unsigned } => clinic::org_show(g, dir, unsigned),
                OrgCommand::SignState => clinic::org_sign_state(g, dir),
            }
        }
        Command::Certificate { command } => match command {
            CertificateCommand::Request => clinic::certificate_request(g).await,
            CertificateCommand::Install { certificate, wait } => {
                clinic::certificate_install(g, &certificate, wait).await
            }
            CertificateCommand::Show => clinic::certificate_show(g).await,
        },
        Command::Clinic { command } => match command {
            ClinicCommand::Add { link, invite } => {
                clinic::clinic_add(g, &link, invite.as_deref()).await
            }
            ClinicCommand::Show => clinic::clinic_show(g).await,
        },
        Command::Devices { command } => match command {
            DevicesCommand::Link { code_only, wait } => devices::link(g, code_only, wait).await,
            DevicesCommand::List => devices::list(g).await,
            DevicesCommand::Remove { device_id, wait } => devices::remove(g, device_id, wait).await,
        },
        Command::Wipe { address, wait } => clinic::wipe(g, &address, wait).await,
        Command::OpenConversation { id_only, wait } => {
            conversations::open_conversation(g, id_only, wait).await
        }
        Command::OnDuty { state, wait } => {
            conversations::on_duty(g, cli::on_off(&state).map_err(common::fail)?, wait).await
        }
        Command::Queue { wait } => conversations::queue(g, wait).await,
        Command::Claim { conversation, wait } => conversations::claim(g, &conversation, wait).await,
        Command::Join {
            conversation, wait, ..
        } => conversations::join(g, &conversation, wait).await,
        Command::Leave { conversation, wait } => conversations::leave(g, &conversation, wait).await,
        Command::Archive {
            conversation,
            key_file,
            wait,
        } => clinic::open_archive(g, &conversation, &key_file, wait).await,
        Command::Handoff {
            conversation,
            to,
            note,
            no_history,
            wait,
        } => {
            let share = !no_history;
            conversations::handoff(g, &conversation, &to, note.as_deref(), share, wait).await
        }
        Command::Recall {
            conversation,
            message,
            wait,
        } => conversations::recall(g, &conversation, &message, wait).await,
        Command::Conversations => conversations::list(g).await,
        Command::LegalHold {
            conversation,
            state,
        } => {
            let hold = cli::on_off(&state).map_err(common::fail)?;
            conversations::legal_hold(g, &conversation, hold).await
        }
        Command::Retention { wait } => conversations::retention(g, wait).await,
        Command::Members { conversation, wait } => {
            conversations::members(g, &conversation, wait).await
        }
        Command::Backup { out } => healing::backup(g, &out).await,
        Command::Restore {
            file,
            replace_other_store,
        } => healing::restore(g, &file, replace_other_store).await,
    }
}

/// `hushwire transcript open bob | head` closes the pipe early; `println!` then panics. That is
/// the reader's choice, not an error: leave quietly with the status a shell expects after
/// SIGPIPE (128 + 13), without a backtrace. Any other panic is reported as usual.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
