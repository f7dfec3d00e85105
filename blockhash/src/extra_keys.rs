//! Per-block extra keys (cache salt, LoRA adapter) as vLLM folds them into the hash.
//!
//! SKELETON: see hasher.rs.

/// Today's vLLM tags each extra key (`("cache_salt", s)`); older versions put bare values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtraKeysStyle {
    #[default]
    Tagged,
    Bare,
}

/// What a request contributes to extra keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestExtras {
    pub cache_salt: Option<String>,
    /// LoRA adapter name when the request's model is a configured adapter.
    pub lora_name: Option<String>,
}

/// The extra keys of one block, in the order vLLM builds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockExtraKeys(pub Vec<ExtraKey>);

/// One element of a block's extra-keys tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraKey {
    Text(String),
    /// A tagged tuple such as `("cache_salt", "tenant-a")`.
    Tuple(Vec<ExtraKey>),
}
