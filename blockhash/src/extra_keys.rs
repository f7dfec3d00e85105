//! Per-block extra keys (cache salt, LoRA adapter) as vLLM folds them into the hash.
//!
//! Two requests with the same tokens but a different `cache_salt` or LoRA adapter must not
//! share KV blocks, so vLLM adds an `extra_keys` tuple to each block's hash input: LoRA keys,
//! then cache-salt keys (multimodal and prompt-embeds keys, which a text router never sees,
//! sit between and after them). The salt goes on the first block only, the LoRA key on every
//! block; a block with no keys hashes `None`. The shape changed across versions (read in
//! vLLM's sources, `vllm/v1/core/kv_cache_utils.py`):
//!
//! - vLLM 0.31+ ([`ExtraKeysStyle::Tagged`]): `("lora", lora_name, lora_path)` and
//!   `("cache_salt", salt)`. The salted request of the real vLLM 0.32 capture set proves the
//!   salt form. vLLM refuses a LoRA without a path, so the router must be told the path the
//!   engines loaded the adapter from; KV events publish the keys untagged (name only), so
//!   the path cannot be learnt from them.
//! - vLLM 0.12-0.30 ([`ExtraKeysStyle::Bare`]): the bare `lora_name` and bare salt.
//! - vLLM 0.10-0.11 hashed the adapter's integer `lora_int_id` instead of its name; build
//!   such keys with [`ExtraKey::Int`] directly.

/// vLLM 0.31+ tags each extra key (`("cache_salt", s)`); older versions put bare values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtraKeysStyle {
    #[default]
    Tagged,
    Bare,
}

impl ExtraKeysStyle {
    /// The name the command lines use (`--extra-keys`).
    pub fn name(&self) -> &'static str {
        match self {
            ExtraKeysStyle::Tagged => "tagged",
            ExtraKeysStyle::Bare => "bare",
        }
    }
}

impl std::fmt::Display for ExtraKeysStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ExtraKeysStyle {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tagged" => Ok(ExtraKeysStyle::Tagged),
            "bare" => Ok(ExtraKeysStyle::Bare),
            other => Err(crate::Error::Config(format!(
                "unknown extra-keys style {other:?} (expected tagged or bare)"
            ))),
        }
    }
}

/// What a request contributes to extra keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestExtras {
    pub cache_salt: Option<String>,
    /// LoRA adapter name when the request's model is a configured adapter.
    pub lora_name: Option<String>,
    /// The adapter's path as the engine loaded it, when the deployment tags it too.
    pub lora_path: Option<String>,
}

impl RequestExtras {
    /// Refuses extras whose tagged LoRA key cannot be built: vLLM 0.31+ hashes the
    /// adapter's path, and without it [`RequestExtras::block_extra_keys`] falls back to a
    /// `("lora", name)` key that keeps the adapter's blocks apart from the base model's
    /// (a miss, never a false hit) but equals no engine's hash.
    pub fn check(&self, style: ExtraKeysStyle) -> Result<(), crate::Error> {
        match (style, &self.lora_name, &self.lora_path) {
            (ExtraKeysStyle::Tagged, Some(name), None) => Err(crate::Error::Config(format!(
                "LoRA adapter {name:?}: tagged extra keys need the adapter's path as the engines loaded it"
            ))),
            _ => Ok(()),
        }
    }

    /// Block `block_index`'s extra keys, or `None` when vLLM hashes `None` there.
    pub fn block_extra_keys(
        &self,
        block_index: usize,
        style: ExtraKeysStyle,
    ) -> Option<BlockExtraKeys> {
        let mut keys = Vec::new();
        if let Some(name) = &self.lora_name {
            keys.push(match style {
                ExtraKeysStyle::Tagged => {
                    let mut tagged = vec![ExtraKey::text("lora"), ExtraKey::text(name)];
                    if let Some(path) = &self.lora_path {
                        tagged.push(ExtraKey::text(path));
                    }
                    ExtraKey::Tuple(tagged)
                }
                ExtraKeysStyle::Bare => ExtraKey::text(name),
            });
        }
        if block_index == 0 {
            if let Some(salt) = &self.cache_salt {
                keys.push(match style {
                    ExtraKeysStyle::Tagged => {
                        ExtraKey::Tuple(vec![ExtraKey::text("cache_salt"), ExtraKey::text(salt)])
                    }
                    ExtraKeysStyle::Bare => ExtraKey::text(salt),
                });
            }
        }
        if keys.is_empty() {
            None
        } else {
            Some(BlockExtraKeys(keys))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cache_salt.is_none() && self.lora_name.is_none()
    }
}

/// The extra keys of one block, in the order vLLM builds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockExtraKeys(pub Vec<ExtraKey>);

/// One element of a block's extra-keys tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraKey {
    Text(String),
    Int(i64),
    /// A tagged tuple such as `("cache_salt", "tenant-a")`.
    Tuple(Vec<ExtraKey>),
}

impl ExtraKey {
    pub fn text(s: &str) -> Self {
        ExtraKey::Text(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_only_on_the_first_block_lora_on_every_block() {
        let extras = RequestExtras {
            cache_salt: Some("s".into()),
            lora_name: Some("ad".into()),
            lora_path: None,
        };
        let first = extras.block_extra_keys(0, ExtraKeysStyle::Bare);
        let second = extras.block_extra_keys(1, ExtraKeysStyle::Bare);
        assert_eq!(
            first,
            Some(BlockExtraKeys(vec![
                ExtraKey::text("ad"),
                ExtraKey::text("s")
            ]))
        );
        assert_eq!(second, Some(BlockExtraKeys(vec![ExtraKey::text("ad")])));
        assert_eq!(
            RequestExtras::default().block_extra_keys(0, ExtraKeysStyle::Tagged),
            None
        );
    }

    #[test]
    fn tagged_lora_keys_carry_name_and_path() {
        let mut extras = RequestExtras {
            cache_salt: Some("s".into()),
            lora_name: Some("ad".into()),
            lora_path: Some("/p".into()),
        };
        let lora = ExtraKey::Tuple(vec![
            ExtraKey::text("lora"),
            ExtraKey::text("ad"),
            ExtraKey::text("/p"),
        ]);
        let salt = ExtraKey::Tuple(vec![ExtraKey::text("cache_salt"), ExtraKey::text("s")]);
        assert_eq!(
            extras.block_extra_keys(0, ExtraKeysStyle::Tagged),
            Some(BlockExtraKeys(vec![lora.clone(), salt]))
        );
        assert_eq!(
            extras.block_extra_keys(3, ExtraKeysStyle::Tagged),
            Some(BlockExtraKeys(vec![lora]))
        );
        assert!(extras.check(ExtraKeysStyle::Tagged).is_ok());
        extras.lora_path = None;
        assert!(extras.check(ExtraKeysStyle::Tagged).is_err());
        assert!(extras.check(ExtraKeysStyle::Bare).is_ok());
    }
}
