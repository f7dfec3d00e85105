//! vLLM's KV-event wire layout: one field table per wire generation, read by both the
//! decoder and the encoder. Adding a vLLM wire version means adding (or extending) a table
//! here; nothing else names a field or a slot.
//!
//! A message is three ZeroMQ frames: the topic, an 8-byte big-endian sequence number and a
//! msgpack payload `[ts, events, dp_rank]` (`dp_rank` absent or nil on a single-rank
//! engine). Block hashes are msgpack ints of any width (the digest's low 64 bits; Python's
//! `hash()` made them negative in 0.10's builtin scheme) or raw digest bytes.
//!
//! # vLLM 0.10 / 0.11: positional arrays ([`WireGeneration::V010Arrays`])
//!
//! msgspec `array_like=True`: each event is an array, tag first, fields by position. A
//! field written "nil" is always present (nil when `None`); a field written "trailing"
//! arrived in a later 0.10.x/0.11 release and is left off the end when it and every field
//! after it are `None`, as the releases without it wrote the event. Slots past the table
//! are skipped (a newer release's additions).
//!
//! | slot | `BlockStored`       | when `None` | `BlockRemoved` | when `None` | `AllBlocksCleared` |
//! |------|---------------------|-------------|----------------|-------------|--------------------|
//! | 0    | tag                 |             | tag            |             | tag                |
//! | 1    | `block_hashes`      | nil         | `block_hashes` | nil         |                    |
//! | 2    | `parent_block_hash` | nil         | `medium`       | trailing    |                    |
//! | 3    | `token_ids`         | nil         |                |             |                    |
//! | 4    | `block_size`        | nil         |                |             |                    |
//! | 5    | `lora_id`           | nil         |                |             |                    |
//! | 6    | `medium`            | trailing    |                |             |                    |
//! | 7    | `lora_name`         | trailing    |                |             |                    |
//!
//! # vLLM 0.3x: maps ([`WireGeneration::V03xMaps`])
//!
//! msgspec `tag_field="type"`, `omit_defaults=True`: each event is a map whose first entry
//! is `"type": <tag>`, then its fields by name in the order below. Fields without a
//! default are written even when `None` (nil); fields defaulting to `None` are omitted
//! ("omitted"). The decoder reads any known field by name in any order and skips unknown
//! names, so a newer release's additions cost nothing.
//!
//! | order | `BlockStored`        | when `None` | `BlockRemoved` | when `None` |
//! |-------|----------------------|-------------|----------------|-------------|
//! | 1     | `block_hashes`       | nil         | `block_hashes` | nil         |
//! | 2     | `parent_block_hash`  | nil         | `medium`       | nil         |
//! | 3     | `token_ids`          | nil         | `group_idx`    | omitted     |
//! | 4     | `block_size`         | nil         |                |             |
//! | 5     | `lora_id`            | nil         |                |             |
//! | 6     | `medium`             | nil         |                |             |
//! | 7     | `lora_name`          | nil         |                |             |
//! | 8     | `extra_keys`         | omitted     |                |             |
//! | 9     | `group_idx`          | omitted     |                |             |
//! | 10    | `kv_cache_spec_kind` | omitted     |                |             |
//! | 11    | `session_id`         | omitted     |                |             |
//!
//! `AllBlocksCleared` is `{"type": "AllBlocksCleared"}`.
//!
//! # Replay (the engine's ROUTER socket)
//!
//! The framing of replay requests and answers is in [`crate::replay`]: 0.3x answers
//! `[topic, seq, payload]`, 0.10/0.11 answered `[seq, payload]`.

/// Which generation of the wire to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireGeneration {
    /// vLLM 0.10: events as tagged arrays.
    V010Arrays,
    /// vLLM 0.3x: events as maps tagged by "type", defaults omitted.
    V03xMaps,
}

/// The event types this decoder knows, by their wire tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    BlockStored,
    BlockRemoved,
    AllBlocksCleared,
}

impl Kind {
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Kind::BlockStored => "BlockStored",
            Kind::BlockRemoved => "BlockRemoved",
            Kind::AllBlocksCleared => "AllBlocksCleared",
        }
    }

    pub(crate) fn from_tag(tag: &str) -> Option<Kind> {
        [
            Kind::BlockStored,
            Kind::BlockRemoved,
            Kind::AllBlocksCleared,
        ]
        .into_iter()
        .find(|k| k.tag() == tag)
    }
}

/// The map key naming the event type in the 0.3x generation.
pub(crate) const TYPE_KEY: &str = "type";

/// Every field any generation carries, named as vLLM names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    BlockHashes,
    ParentBlockHash,
    TokenIds,
    BlockSize,
    LoraId,
    Medium,
    LoraName,
    ExtraKeys,
    GroupIdx,
    KvCacheSpecKind,
    SessionId,
}

const ALL_FIELDS: [Field; 11] = [
    Field::BlockHashes,
    Field::ParentBlockHash,
    Field::TokenIds,
    Field::BlockSize,
    Field::LoraId,
    Field::Medium,
    Field::LoraName,
    Field::ExtraKeys,
    Field::GroupIdx,
    Field::KvCacheSpecKind,
    Field::SessionId,
];

impl Field {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::BlockHashes => "block_hashes",
            Field::ParentBlockHash => "parent_block_hash",
            Field::TokenIds => "token_ids",
            Field::BlockSize => "block_size",
            Field::LoraId => "lora_id",
            Field::Medium => "medium",
            Field::LoraName => "lora_name",
            Field::ExtraKeys => "extra_keys",
            Field::GroupIdx => "group_idx",
            Field::KvCacheSpecKind => "kv_cache_spec_kind",
            Field::SessionId => "session_id",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Field> {
        ALL_FIELDS.into_iter().find(|f| f.name() == name)
    }
}

/// How a field whose value is `None` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenNone {
    /// Present, as nil.
    Nil,
    /// Left out: a map omits the key; an array drops it when it is trailing.
    Omitted,
}

/// One slot of an event's layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) field: Field,
    pub(crate) when_none: WhenNone,
}

const fn nil(field: Field) -> Slot {
    Slot {
        field,
        when_none: WhenNone::Nil,
    }
}

const fn omitted(field: Field) -> Slot {
    Slot {
        field,
        when_none: WhenNone::Omitted,
    }
}

const V010_STORED: &[Slot] = &[
    nil(Field::BlockHashes),
    nil(Field::ParentBlockHash),
    nil(Field::TokenIds),
    nil(Field::BlockSize),
    nil(Field::LoraId),
    omitted(Field::Medium),
    omitted(Field::LoraName),
];

const V010_REMOVED: &[Slot] = &[nil(Field::BlockHashes), omitted(Field::Medium)];

const V03X_STORED: &[Slot] = &[
    nil(Field::BlockHashes),
    nil(Field::ParentBlockHash),
    nil(Field::TokenIds),
    nil(Field::BlockSize),
    nil(Field::LoraId),
    nil(Field::Medium),
    nil(Field::LoraName),
    omitted(Field::ExtraKeys),
    omitted(Field::GroupIdx),
    omitted(Field::KvCacheSpecKind),
    omitted(Field::SessionId),
];

const V03X_REMOVED: &[Slot] = &[
    nil(Field::BlockHashes),
    nil(Field::Medium),
    omitted(Field::GroupIdx),
];

/// The layout of `kind` in `generation`: array slots after the tag, or map entries after
/// `"type"`, in wire order.
pub(crate) fn layout(generation: WireGeneration, kind: Kind) -> &'static [Slot] {
    match (generation, kind) {
        (WireGeneration::V010Arrays, Kind::BlockStored) => V010_STORED,
        (WireGeneration::V010Arrays, Kind::BlockRemoved) => V010_REMOVED,
        (WireGeneration::V03xMaps, Kind::BlockStored) => V03X_STORED,
        (WireGeneration::V03xMaps, Kind::BlockRemoved) => V03X_REMOVED,
        (_, Kind::AllBlocksCleared) => &[],
    }
}
