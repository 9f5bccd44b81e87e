//! What the model-based tests share (`texts_model.rs`, `batch_model.rs`): a
//! seeded generator, and their sizes read from the environment.

/// SplitMix64: seeded, small, and enough for choosing steps.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The number in variable `name`, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seeds to run: `<prefix>_SEED` alone, or 1 to `<prefix>_SEEDS` (`default`).
pub fn seeds(prefix: &str, default: u64) -> Vec<u64> {
    match std::env::var(format!("{prefix}_SEED")) {
        Ok(seed) => vec![seed.parse().expect("the seed is a number")],
        Err(_) => (1..=env_number(&format!("{prefix}_SEEDS"), default)).collect(),
    }
}
