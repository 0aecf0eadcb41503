//! Two parties, Alice (a patient) and Bob (a clinic agent), exchange messages with the core API
//! alone: no relay, no storage. Run it with `cargo run --example two_parties`.

use hushwire::{Account, Session};
use rand_core::UnwrapErr;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = UnwrapErr(getrandom::SysRng);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();

    let alice = Account::new(1, now, &mut rng);
    let mut bob = Account::new(1, now, &mut rng);
    bob.generate_one_time_prekeys(10, &mut rng);
    bob.generate_one_time_kem_prekeys(10, &mut rng);

    // Alice fetches Bob's bundle (from the relay, in real life) and starts a session.
    let bundle = bob.prekey_bundle().ok_or("bob has no signed prekey")?;
    let mut alice_to_bob = Session::initiate(alice.identity(), &bundle, &mut rng)?;
    let first = alice_to_bob.encrypt(b"Hi, I have a question about my prescription.")?;
    println!(
        "alice -> bob: {} bytes on the wire (a prekey message)",
        first.len()
    );

    // Bob accepts: the handshake and the first message in one step.
    let inbound = bob.accept(&first, &mut rng)?;
    let mut bob_to_alice = inbound.session;
    println!(
        "bob reads:    {}",
        String::from_utf8_lossy(&inbound.plaintext)
    );

    let reply = bob_to_alice.encrypt(b"Of course. Which one?")?;
    println!("bob -> alice: {} bytes on the wire", reply.len());
    println!(
        "alice reads:  {}",
        String::from_utf8_lossy(&alice_to_bob.decrypt(&reply, &mut rng)?)
    );

    // Both sides see the same safety number; users compare it to rule out an interceptor.
    assert_eq!(alice_to_bob.safety_number(), bob_to_alice.safety_number());
    println!("safety number: {}", alice_to_bob.safety_number());
    Ok(())
}
