//! `kvroute`: the one binary. SKELETON: `keys` first (issue 2), then `serve` (indexer).
fn main() {}
