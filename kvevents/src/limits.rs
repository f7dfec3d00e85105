//! The bounds of what vLLM can send, stated once. The decoder checks every count and size
//! it reads against these (and against the bytes actually left in the message) before it
//! allocates, so a message can only cost what its own length allows: an event
//! outside them is counted in [`crate::EventBatch::skipped_invalid`] and skipped, a message
//! that would exceed the memory budget is refused whole.

/// Largest `block_size` accepted. vLLM's `--block-size` choices stop at 256; hybrid
/// (attention + Mamba) models raise the attention block size to match the Mamba state's
/// page, which stays in the low thousands. 0 (no tokens per block) is never valid.
pub const MAX_BLOCK_SIZE: u32 = 8192;

/// Deepest msgpack nesting of one `extra_keys` entry, the only field kept as a generic
/// value (vLLM's per-block tuple nests 3 levels: tuple, multimodal list, hash). Deeper
/// entries make the event invalid. Unknown fields are skipped at any depth without
/// recursion, so they need no bound.
pub const MAX_EXTRA_KEY_DEPTH: usize = 8;

/// What one message may cost decoded, per byte of its payload. The densest real event
/// (vLLM 0.10's `["AllBlocksCleared"]`, 18 bytes) decodes to about 12x its size; token
/// ids and hashes stay under 4x.
pub const MAX_DECODED_BYTES_PER_BYTE: usize = 16;

/// Memory any message may use decoded, whatever its size (one small batch of events).
pub const MIN_DECODE_BUDGET: usize = 4096;
