//! The encoder: writes events byte for byte as vLLM writes them, in either generation,
//! laid out by [`crate::wire`]'s tables (used by the simulated engines and the tests).

use rmpv::Value;

use crate::types::{BlockRemoved, BlockStored, EngineHash, EventBatch, KvEvent};
use crate::wire::{layout, Field, Kind, WhenNone, WireGeneration, TYPE_KEY};

/// The msgpack payload `[ts, events, dp_rank]` as vLLM writes it.
pub fn encode_payload(batch: &EventBatch, generation: WireGeneration) -> Vec<u8> {
    let events = batch
        .events
        .iter()
        .map(|e| event_value(e, generation))
        .collect();
    let value = Value::Array(vec![
        Value::F64(batch.ts),
        Value::Array(events),
        batch
            .data_parallel_rank
            .map(Value::from)
            .unwrap_or(Value::Nil),
    ]);
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &value);
    out
}

/// The three frames `[topic, seq, payload]` of one message.
pub fn encode_message(
    topic: &str,
    seq: u64,
    batch: &EventBatch,
    generation: WireGeneration,
) -> [Vec<u8>; 3] {
    [
        topic.as_bytes().to_vec(),
        seq.to_be_bytes().to_vec(),
        encode_payload(batch, generation),
    ]
}

fn kind(event: &KvEvent) -> Kind {
    match event {
        KvEvent::BlockStored(_) => Kind::BlockStored,
        KvEvent::BlockRemoved(_) => Kind::BlockRemoved,
        KvEvent::AllBlocksCleared => Kind::AllBlocksCleared,
    }
}

fn event_value(event: &KvEvent, generation: WireGeneration) -> Value {
    let kind = kind(event);
    let slots = layout(generation, kind);
    let values = slots
        .iter()
        .map(|slot| (slot, field_value(event, slot.field)));
    match generation {
        WireGeneration::V03xMaps => {
            let mut entries = vec![(Value::from(TYPE_KEY), Value::from(kind.tag()))];
            entries.extend(values.filter_map(|(slot, v)| {
                let v = match (v, slot.when_none) {
                    (Some(v), _) => v,
                    (None, WhenNone::Nil) => Value::Nil,
                    (None, WhenNone::Omitted) => return None,
                };
                Some((Value::from(slot.field.name()), v))
            }));
            Value::Map(entries)
        }
        WireGeneration::V010Arrays => {
            let mut items = vec![Value::from(kind.tag())];
            // The last slot written: the last with a value or always present.
            let mut keep = items.len();
            for (slot, v) in values {
                if v.is_some() || slot.when_none == WhenNone::Nil {
                    keep = items.len() + 1;
                }
                items.push(v.unwrap_or(Value::Nil));
            }
            items.truncate(keep);
            Value::Array(items)
        }
    }
}

/// `field` of `event` as vLLM writes it, `None` if the event has no value for it.
fn field_value(event: &KvEvent, field: Field) -> Option<Value> {
    match event {
        KvEvent::BlockStored(e) => stored_field(e, field),
        KvEvent::BlockRemoved(e) => removed_field(e, field),
        KvEvent::AllBlocksCleared => None,
    }
}

fn stored_field(e: &BlockStored, field: Field) -> Option<Value> {
    let s = |x: &str| Value::from(x);
    match field {
        Field::BlockHashes => Some(hash_array(&e.block_hashes)),
        Field::ParentBlockHash => e.parent_block_hash.as_ref().map(hash_value),
        Field::TokenIds => Some(Value::Array(
            e.token_ids.iter().map(|t| Value::from(*t)).collect(),
        )),
        Field::BlockSize => Some(Value::from(e.block_size)),
        Field::LoraId => e.lora_id.map(Value::from),
        Field::Medium => e.medium.map(|m| s(m.as_str())),
        Field::LoraName => e.lora_name.as_deref().map(s),
        Field::ExtraKeys => e
            .extra_keys
            .as_ref()
            .map(|k| Value::Array(k.iter().map(|v| v.clone().unwrap_or(Value::Nil)).collect())),
        Field::GroupIdx => e.group_idx.map(Value::from),
        Field::KvCacheSpecKind => e.kv_cache_spec_kind.as_deref().map(s),
        Field::SessionId => e.session_id.as_deref().map(s),
    }
}

fn removed_field(e: &BlockRemoved, field: Field) -> Option<Value> {
    match field {
        Field::BlockHashes => Some(hash_array(&e.block_hashes)),
        Field::Medium => e.medium.map(|m| Value::from(m.as_str())),
        Field::GroupIdx => e.group_idx.map(Value::from),
        _ => None,
    }
}

fn hash_array(hashes: &[EngineHash]) -> Value {
    Value::Array(hashes.iter().map(hash_value).collect())
}

fn hash_value(h: &EngineHash) -> Value {
    match h {
        EngineHash::Int(v) => Value::from(*v),
        EngineHash::Bytes(b) => Value::Binary(b.clone()),
    }
}
