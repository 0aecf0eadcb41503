//! `devices link | list | remove` and `init --link`: several devices per person
//! (`docs/client.md` §8.6).

use std::process::ExitCode;
use std::time::Duration;

use hushwire_client::{Client, ClientError};
use serde_json::json;

use crate::cli::Global;
use crate::clinic::text_or_file;
use crate::common::{self, CliResult, open};

/// Opens the store and waits for the relay connection.
async fn connected(g: &Global, wait: u64) -> CliResult<Client> {
    let client = open(g).await?;
    client.connect().await?;
    common::wait_connected(&client, Duration::from_secs(wait)).await?;
    Ok(client)
}

/// `devices link`.
pub async fn link(g: &Global, code_only: bool, wait: u64) -> CliResult<ExitCode> {
    let client = connected(g, wait).await?;
    let result = client.link_device().await;
    let own = client.devices().await;
    client.disconnect().await;
    let linked = result?;
    let own = own?;
    let (code, new_device) = (&linked.code, linked.device_id);
    if code_only {
        println!("{}", code.as_str());
        eprintln!(
            "This code makes a new device {new_device} of yours: keep it secret, use it within \
             ten minutes, then delete it. Unused, remove the device: hushwire devices remove \
             {new_device}"
        );
    } else if g.json {
        println!(
            "{}",
            json!({"code": code.as_str(), "device_id": new_device, "devices": own.devices})
        );
    } else {
        println!("On your new device, within ten minutes, run");
        println!();
        println!("  hushwire init --link -");
        println!();
        println!("and paste this code when it asks (it works once):");
        println!();
        println!("  {}", code.as_str());
        println!();
        println!(
            "It becomes device {new_device} of yours. Keep the code to yourself: whoever uses it \
             first becomes you. If it is not used, remove the device: hushwire devices remove \
             {new_device}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `devices list`.
pub async fn list(g: &Global) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let mut own = client.devices().await?;
    // A device just linked has not read its person's list yet (lists are read at each
    // connection): read it now rather than say none was seen. Offline, the note below says so.
    if own.sequence.is_none() && client.relay_url().await.is_some() {
        let read = async {
            client.connect().await?;
            common::wait_connected(&client, Duration::from_secs(10)).await?;
            client.sync(Duration::from_secs(10)).await?;
            client.devices().await.map_err(Into::into)
        };
        let fresh: CliResult<_> = read.await;
        client.disconnect().await;
        if let Ok(fresh) = fresh {
            own = fresh;
        }
    }
    if g.json {
        println!(
            "{}",
            json!({
                "this_device": own.this_device,
                "devices": own.devices,
                "list_sequence": own.sequence,
            })
        );
    } else {
        for device in &own.devices {
            let marker = if *device == own.this_device {
                "  (this device)"
            } else {
                ""
            };
            println!("device {device}{marker}");
        }
        match own.sequence {
            Some(s) => println!("(signed device list {s}, as of the last connection)"),
            None => println!(
                "(no device list seen: none was published, or this device has not connected \
                 since it was linked; hushwire devices link adds a device)"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `devices remove`.
pub async fn remove(g: &Global, device_id: u32, wait: u64) -> CliResult<ExitCode> {
    let client = connected(g, wait).await?;
    let result = client.remove_device(device_id).await;
    client.disconnect().await;
    result?;
    if g.json {
        println!("{}", json!({"removed": device_id}));
    } else {
        println!(
            "Removed device {device_id}: the relay refuses it from now on, and your contacts stop \
             sending to it as they read your new device list."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `init --link CODE`.
pub async fn init_linked(g: &Global, code: &str) -> CliResult<ExitCode> {
    let home = common::home(g)?;
    let path = home.join("client.db");
    if path.exists() {
        return Err(ClientError::AlreadyInitialized(path).into());
    }
    // `-`: the code from standard input, so it stays out of the shell's history and the
    // process list.
    let code = if code == "-" {
        if common::stdin_is_tty() {
            eprint!("Paste the linking code (hushwire devices link shows it): ");
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| common::fail(format!("cannot read the code from standard input: {e}")))?;
        zeroize::Zeroizing::new(line.trim().to_owned())
    } else {
        zeroize::Zeroizing::new(text_or_file(code)?)
    };
    common::create_home(&home)?;
    let options = common::new_store_options(g)?;
    let secret = common::new_passphrase(g)?;
    let client = Client::join(&path, &secret, options, &code).await?;
    let address = client.address().await;
    let clinic = client.clinic().await;
    if g.json {
        println!(
            "{}",
            json!({
                "address": address.to_string(),
                "store": path.display().to_string(),
                "relay": client.relay_url().await,
            })
        );
    } else {
        println!("Created {}", path.display());
        println!(
            "This is device {} of your identity {}.",
            address.device_id, address.fingerprint
        );
        if let Some(url) = client.relay_url().await {
            println!("Registered at {}", crate::display::escape(&url));
        }
        if let Some(clinic) = clinic {
            println!("Clinic: {}", crate::display::escape(&clinic.name));
        }
        println!("Next: hushwire chat CONTACT, or hushwire recv");
    }
    Ok(ExitCode::SUCCESS)
}
