//! What the client takes from the operating system: the wall clock and randomness. The core
//! crate takes neither (it is sans-IO); this is where the client supplies them.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use zeroize::Zeroizing;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh ChaCha20 generator seeded from the operating system.
pub(crate) fn rng() -> ChaCha20Rng {
    let mut seed = Zeroizing::new([0u8; 32]);
    // Without OS randomness nothing here is safe; getrandom only fails on broken platforms, and
    // a zero seed would be worse than stopping.
    if getrandom::fill(seed.as_mut()).is_err() {
        std::process::abort();
    }
    ChaCha20Rng::from_seed(*seed)
}
