//! Synthetic long prompts for routing tests: a ~1,000-token "customer handbook" per seed,
//! distinct from every other seed's from its first block, the same for the same seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Customer `seed`'s handbook (deterministic).
pub fn customer_handbook(seed: u64) -> String {
    const WORDS: &[&str] = &[
        "ledger",
        "account",
        "invoice",
        "balance",
        "shipment",
        "carrier",
        "customs",
        "tariff",
        "warehouse",
        "pallet",
        "refund",
        "policy",
        "renewal",
        "premium",
        "claim",
        "adjuster",
        "quarter",
        "forecast",
        "margin",
        "revenue",
        "the",
        "of",
        "and",
        "to",
        "for",
        "with",
        "on",
        "by",
        "is",
        "was",
        "after",
        "before",
        "under",
        "over",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let words: Vec<String> = (0..900)
        .map(|_| {
            let w = WORDS[rng.random_range(0..WORDS.len())];
            if rng.random_bool(0.15) {
                format!("{w}-{}", rng.random_range(0..100_000))
            } else {
                w.to_string()
            }
        })
        .collect();
    format!("Customer {seed} handbook. {}", words.join(" "))
}
