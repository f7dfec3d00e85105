//! The tolerant decoder: frames and msgpack payloads of either wire generation into
//! [`KvMessage`]s, fields placed by [`crate::wire`]'s tables.
//!
//! It ignores fields it does not know, counts and skips events it cannot use (an unknown
//! type in [`EventBatch::skipped_unknown`], a known type vLLM could not have sent in
//! [`EventBatch::skipped_invalid`]), and refuses only a message whose frames or payload are
//! not vLLM's, or that would cost more memory than its length allows. It never panics,
//! never recurses on the input, and never allocates what the input merely declares.

use rmpv::Value;

use crate::limits::{MAX_BLOCK_SIZE, MAX_EXTRA_KEY_DEPTH};
use crate::reader::Reader;
use crate::types::{BlockRemoved, BlockStored, EngineHash, EventBatch, KvEvent, KvMessage, Medium};
use crate::wire::{layout, Field, Kind, WireGeneration, TYPE_KEY};

/// Why a message is not vLLM's.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("expected 3 frames [topic, seq, payload], got {0}")]
    FrameCount(usize),
    #[error("sequence frame must be 8 bytes, got {0}")]
    SeqLength(usize),
    #[error("payload is not msgpack: {0}")]
    Msgpack(String),
    #[error("payload shape: {0}")]
    Shape(&'static str),
    #[error("payload of {0} bytes would exceed its decode budget (see limits)")]
    TooCostly(usize),
}

/// Decode `[topic, seq, payload]`.
pub fn decode_message(frames: &[&[u8]]) -> Result<KvMessage, DecodeError> {
    let [topic, seq, payload] = frames else {
        return Err(DecodeError::FrameCount(frames.len()));
    };
    let seq: [u8; 8] = (*seq)
        .try_into()
        .map_err(|_| DecodeError::SeqLength(seq.len()))?;
    Ok(KvMessage {
        topic: String::from_utf8_lossy(topic).into_owned(),
        seq: u64::from_be_bytes(seq),
        batch: decode_payload(payload)?,
    })
}

/// Decode a msgpack payload `[ts, events, dp_rank]` (dp_rank may be absent or nil).
pub fn decode_payload(payload: &[u8]) -> Result<EventBatch, DecodeError> {
    let mut r = Reader::new(payload);
    let result = decode_batch(&mut r);
    if r.over_budget() {
        return Err(DecodeError::TooCostly(payload.len()));
    }
    result
}

fn decode_batch(r: &mut Reader<'_>) -> Result<EventBatch, DecodeError> {
    let n = r
        .array_len()
        .ok_or_else(|| not_msgpack_or(r, "payload is not an array"))?;
    if n == 0 {
        return Err(DecodeError::Shape("empty payload"));
    }
    let ts = r
        .f64()
        .ok_or(DecodeError::Shape("timestamp is not a number"))?;
    if n < 2 {
        return Err(DecodeError::Shape("events are not an array"));
    }
    let count = r
        .array_len()
        .ok_or_else(|| not_msgpack_or(r, "events are not an array"))?;
    let count = r.fits(count).ok_or_else(truncated)?;
    r.charge(count.saturating_mul(std::mem::size_of::<KvEvent>()))
        .ok_or_else(truncated)?;
    let mut batch = EventBatch {
        ts,
        events: Vec::with_capacity(count),
        data_parallel_rank: None,
        skipped_unknown: 0,
        skipped_invalid: 0,
    };
    for _ in 0..count {
        let start = r.pos();
        match decode_event(r) {
            Decoded::Event(e) => batch.events.push(e),
            skipped => {
                // Not usable as an event: skip it whole if it is msgpack at all.
                r.set_pos(start);
                r.skip().ok_or_else(truncated)?;
                if r.over_budget() {
                    return Err(truncated());
                }
                match skipped {
                    Decoded::Invalid => batch.skipped_invalid += 1,
                    _ => batch.skipped_unknown += 1,
                }
            }
        }
    }
    if n >= 3 {
        batch.data_parallel_rank = if r.nil() {
            None
        } else {
            let rank = r.u32();
            if rank.is_none() {
                r.skip().ok_or_else(truncated)?;
            }
            rank
        };
    }
    Ok(batch)
}

fn truncated() -> DecodeError {
    DecodeError::Msgpack("truncated or invalid msgpack".into())
}

/// A value of the wrong type is a shape error; no value at all is a msgpack error.
fn not_msgpack_or(r: &Reader<'_>, shape: &'static str) -> DecodeError {
    if r.remaining() == 0 {
        truncated()
    } else {
        DecodeError::Shape(shape)
    }
}

/// What one event decoded to.
enum Decoded {
    Event(KvEvent),
    /// Not an event of a type this decoder knows.
    Unknown,
    /// A known type, but unreadable or out of what vLLM sends.
    Invalid,
}

/// The fields of one event as read, whatever its generation.
#[derive(Default)]
struct RawEvent {
    block_hashes: Option<Vec<EngineHash>>,
    parent_block_hash: Option<EngineHash>,
    token_ids: Option<Vec<u32>>,
    block_size: Option<u32>,
    lora_id: Option<i64>,
    medium: Option<Medium>,
    lora_name: Option<String>,
    extra_keys: Option<Vec<Option<Value>>>,
    group_idx: Option<u32>,
    kv_cache_spec_kind: Option<String>,
    session_id: Option<String>,
}

fn decode_event(r: &mut Reader<'_>) -> Decoded {
    let mut raw = RawEvent::default();
    let Some(kind) = read_event(r, &mut raw) else {
        return Decoded::Unknown;
    };
    let Some(kind) = kind else {
        return Decoded::Invalid;
    };
    match build(kind, raw) {
        Some(e) => Decoded::Event(e),
        None => Decoded::Invalid,
    }
}

/// Reads an event's tag and fields into `raw`: `None` if it is not an event of a known
/// type, `Some(None)` if it is one but a field is unreadable.
fn read_event(r: &mut Reader<'_>, raw: &mut RawEvent) -> Option<Option<Kind>> {
    if let Some(n) = r.map_len() {
        let n = r.fits(n)?;
        let mut kind = None;
        for _ in 0..n {
            match r.str() {
                Some(TYPE_KEY) => kind = Some(Kind::from_tag(r.str()?)?),
                Some(name) => match Field::from_name(name) {
                    Some(field) => {
                        if read_field(r, field, raw).is_none() {
                            // Invalid if its type is known (vLLM writes it first).
                            return kind.map(|_| None);
                        }
                    }
                    None => r.skip()?,
                },
                None => {
                    r.skip()?;
                    r.skip()?;
                }
            }
        }
        kind.map(Some)
    } else {
        let n = r.array_len()?;
        let n = r.fits(n)?.checked_sub(1)?;
        let kind = Kind::from_tag(r.str()?)?;
        let slots = layout(WireGeneration::V010Arrays, kind);
        for i in 0..n {
            match slots.get(i) {
                Some(slot) => {
                    if read_field(r, slot.field, raw).is_none() {
                        return Some(None);
                    }
                }
                None => r.skip()?,
            }
        }
        Some(Some(kind))
    }
}

/// The event `raw` holds, if it is one vLLM can send: its required fields present,
/// `block_size` in bounds, no more token ids than its blocks hold, at most one extra-keys
/// entry per block.
fn build(kind: Kind, raw: RawEvent) -> Option<KvEvent> {
    match kind {
        Kind::BlockStored => {
            let block_hashes = raw.block_hashes?;
            let token_ids = raw.token_ids?;
            let block_size = raw
                .block_size
                .filter(|b| (1..=MAX_BLOCK_SIZE).contains(b))?;
            let capacity = block_hashes.len().checked_mul(block_size as usize)?;
            if token_ids.len() > capacity {
                return None;
            }
            if raw
                .extra_keys
                .as_ref()
                .is_some_and(|k| k.len() > block_hashes.len())
            {
                return None;
            }
            Some(KvEvent::BlockStored(BlockStored {
                block_hashes,
                parent_block_hash: raw.parent_block_hash,
                token_ids,
                block_size,
                lora_id: raw.lora_id,
                medium: raw.medium,
                lora_name: raw.lora_name,
                extra_keys: raw.extra_keys,
                group_idx: raw.group_idx,
                kv_cache_spec_kind: raw.kv_cache_spec_kind,
                session_id: raw.session_id,
            }))
        }
        Kind::BlockRemoved => Some(KvEvent::BlockRemoved(BlockRemoved {
            block_hashes: raw.block_hashes?,
            medium: raw.medium,
            group_idx: raw.group_idx,
        })),
        Kind::AllBlocksCleared => Some(KvEvent::AllBlocksCleared),
    }
}

/// Reads the value of `field`. `None` only if a field the event cannot do without is
/// unreadable (or the message's budget is spent); optional fields of an unexpected type
/// read as absent.
fn read_field(r: &mut Reader<'_>, field: Field, raw: &mut RawEvent) -> Option<()> {
    if r.nil() {
        return Some(());
    }
    match field {
        Field::BlockHashes => raw.block_hashes = Some(read_hashes(r)?),
        Field::ParentBlockHash => raw.parent_block_hash = Some(read_hash(r)?),
        Field::TokenIds => {
            let n = r.array_len()?;
            let n = r.fits(n)?;
            r.charge(n * std::mem::size_of::<u32>())?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(r.u32()?);
            }
            raw.token_ids = Some(ids);
        }
        Field::BlockSize => raw.block_size = Some(r.u32()?),
        Field::Medium => raw.medium = optional(r, |r| r.str().map(Medium::parse))?,
        Field::LoraId => {
            raw.lora_id = optional(r, Reader::int)?.and_then(|(v, negative)| {
                if negative {
                    Some(v as i64)
                } else {
                    i64::try_from(v).ok()
                }
            });
        }
        Field::LoraName => raw.lora_name = optional_string(r)?,
        Field::KvCacheSpecKind => raw.kv_cache_spec_kind = optional_string(r)?,
        Field::SessionId => raw.session_id = optional_string(r)?,
        Field::GroupIdx => raw.group_idx = optional(r, Reader::u32)?,
        Field::ExtraKeys => raw.extra_keys = read_extra_keys(r)?,
    }
    Some(())
}

/// An optional field: its value if `read` understands it, else skipped and absent.
fn optional<'a, T>(
    r: &mut Reader<'a>,
    read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Option<Option<T>> {
    match read(r) {
        Some(v) => Some(Some(v)),
        None => r.skip().map(|_| None),
    }
}

fn optional_string(r: &mut Reader<'_>) -> Option<Option<String>> {
    let s = optional(r, |r| r.str())?;
    if let Some(s) = s {
        r.charge(s.len())?;
    }
    Some(s.map(str::to_owned))
}

/// One entry per block, nil or a small value (vLLM's per-block tuple: multimodal hashes,
/// LoRA, cache salt); anything but an array reads as absent.
fn read_extra_keys(r: &mut Reader<'_>) -> Option<Option<Vec<Option<Value>>>> {
    let Some(n) = r.array_len() else {
        return r.skip().map(|_| None);
    };
    let n = r.fits(n)?;
    r.charge(n * std::mem::size_of::<Option<Value>>())?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(if r.nil() {
            None
        } else {
            // msgspec writes only valid UTF-8 strings.
            Some(r.value(MAX_EXTRA_KEY_DEPTH).filter(valid_strings)?)
        });
    }
    Some(Some(out))
}

/// Whether every string in `v` is UTF-8 (`v` is at most [`MAX_EXTRA_KEY_DEPTH`] deep).
fn valid_strings(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_str(),
        Value::Array(items) => items.iter().all(valid_strings),
        Value::Map(entries) => entries
            .iter()
            .all(|(k, v)| valid_strings(k) && valid_strings(v)),
        _ => true,
    }
}

fn read_hashes(r: &mut Reader<'_>) -> Option<Vec<EngineHash>> {
    let n = r.array_len()?;
    let n = r.fits(n)?;
    r.charge(n * std::mem::size_of::<EngineHash>())?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(read_hash(r)?);
    }
    Some(out)
}

fn read_hash(r: &mut Reader<'_>) -> Option<EngineHash> {
    match r.peek()? {
        0xc4..=0xc6 => {
            let b = r.bin()?;
            r.charge(b.len())?;
            Some(EngineHash::Bytes(b.to_vec()))
        }
        // Python's hash() of 0.10's builtin scheme can be negative: same 64 bits.
        _ => r.int().map(|(v, _)| EngineHash::Int(v)),
    }
}
