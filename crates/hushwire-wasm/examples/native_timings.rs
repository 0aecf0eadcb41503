//! The operations `js-bench/bench.js` times in WebAssembly, timed natively the same way (median
//! of five batches after one warm-up batch) through the same wrappers, so the two are side by
//! side on one machine. Built alone (`-p hushwire-wasm`) the core uses its pure-Rust backend
//! here too, so the ratio is WebAssembly against native for the same code:
//!
//! `cargo run --release -p hushwire-wasm --example native_timings`

use std::time::Instant;

use hushwire_wasm::{Account, Session, StorageKey};

type Result<T> = core::result::Result<T, Box<dyn std::error::Error>>;

/// Median microseconds per operation: `setup(n)` builds a batch, `op` runs once per item.
fn measure<T>(
    name: &str,
    n: usize,
    mut setup: impl FnMut(usize) -> Result<Vec<T>>,
    mut op: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let mut batches = Vec::new();
    for b in 0..6 {
        let items = setup(n)?;
        let start = Instant::now();
        for item in items {
            op(item)?;
        }
        #[allow(clippy::cast_precision_loss)]
        let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        if b > 0 {
            batches.push(us);
        }
    }
    batches.sort_by(f64::total_cmp);
    let us = batches.get(batches.len() / 2).copied().unwrap_or_default();
    if us >= 1000.0 {
        println!("{name:<28} {:.2} ms", us / 1000.0);
    } else {
        println!("{name:<28} {us:.2} µs");
    }
    Ok(())
}

fn main() -> Result<()> {
    let alice = Account::new(1, 0.0)?;
    let mut bob = Account::new(2, 0.0)?;
    let mut to_bob = Session::initiate(&alice, &bob.prekey_bundle()?)?;
    let mut from_alice = bob.accept(&to_bob.encrypt(&[0])?)?.take_session()?;
    to_bob.decrypt(&from_alice.encrypt(&[0])?)?;
    let kib = [0x42u8; 1024];
    let key = StorageKey::new(&[7; 32])?;

    measure(
        "encrypt 1 KiB",
        2000,
        |n| Ok(vec![(); n]),
        |()| {
            to_bob.encrypt(&kib)?;
            Ok(())
        },
    )?;
    // The messages are made in setup, so this borrows to_bob there and from_alice in op.
    let mut wires = Vec::new();
    measure(
        "decrypt 1 KiB",
        2000,
        |n| {
            wires = (0..n)
                .map(|_| to_bob.encrypt(&kib))
                .collect::<core::result::Result<_, _>>()?;
            Ok(std::mem::take(&mut wires))
        },
        |w| {
            from_alice.decrypt(&w)?;
            Ok(())
        },
    )?;
    measure(
        "ratchet turn (send + reply)",
        100,
        |n| Ok(vec![(); n]),
        |()| {
            from_alice.decrypt(&to_bob.encrypt(&kib)?)?;
            to_bob.decrypt(&from_alice.encrypt(&kib)?)?;
            Ok(())
        },
    )?;
    let bundle = bob.prekey_bundle()?;
    measure(
        "handshake (initiate)",
        20,
        |n| Ok(vec![(); n]),
        |()| {
            Session::initiate(&alice, &bundle)?;
            Ok(())
        },
    )?;
    measure(
        "handshake (accept)",
        20,
        |n| {
            (0..n)
                .map(|_| Ok(Session::initiate(&alice, &bundle)?.encrypt(&kib)?))
                .collect()
        },
        |m: Vec<u8>| {
            bob.accept(&m)?;
            Ok(())
        },
    )?;
    measure(
        "session seal",
        500,
        |n| Ok(vec![(); n]),
        |()| {
            to_bob.seal(&key)?;
            Ok(())
        },
    )?;
    let sealed = to_bob.seal(&key)?;
    measure(
        "session unseal",
        500,
        |n| Ok(vec![(); n]),
        |()| {
            Session::unseal(&sealed, &key)?;
            Ok(())
        },
    )?;
    measure(
        "new account",
        20,
        |n| Ok(vec![(); n]),
        |()| {
            Account::new(3, 0.0)?;
            Ok(())
        },
    )?;
    Ok(())
}
