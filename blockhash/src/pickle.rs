//! Python's `pickle.dumps(obj, protocol=5)` for the values vLLM's default hash functions
//! (`sha256` and `xxhash`, `vllm/utils/hashing.py`) digest: the block triple
//! `(parent_digest, tuple(token_ids), extra_keys_or_None)` and the `NONE_HASH` seed string.
//!
//! Those hashes are over pickle bytes, so a router must reproduce CPython's pickler byte
//! for byte. For these types its output is fixed by the protocol (checked against
//! `pickle.dumps` by the reference vectors in `tests/vectors`):
//!
//! - `PROTO 5`, then the payload inside a `FRAME` (8-byte little-endian length), then
//!   `STOP`. CPython commits a frame once it reaches 64 KiB at the next object boundary
//!   and starts a new one; a frame under 4 bytes is written without its header.
//! - ints: `BININT1` (0..=255), `BININT2` (..=65535), `BININT` (signed 32-bit), else
//!   `LONG1` with the shortest two's-complement little-endian bytes.
//! - `bytes`: `SHORT_BINBYTES`/`BINBYTES`; `str`: `SHORT_BINUNICODE`/`BINUNICODE` (UTF-8);
//!   both followed by `MEMOIZE`.
//! - tuples: `EMPTY_TUPLE`; 1-3 items then `TUPLE1`-`TUPLE3`; longer ones `MARK` items
//!   `TUPLE`; non-empty ones followed by `MEMOIZE`. `None` is `NONE`.
//!
//! The pickler also memoizes by object identity and writes `BINGET` when the very same
//! Python object appears twice in one value; vLLM builds each key afresh, so no object
//! repeats inside a block's triple (equal strings are distinct objects there).

use crate::extra_keys::ExtraKey;

const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const STOP: u8 = b'.';
const NONE: u8 = b'N';
const MARK: u8 = b'(';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const BININT: u8 = b'J';
const LONG1: u8 = 0x8a;
const SHORT_BINBYTES: u8 = b'C';
const BINBYTES: u8 = b'B';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const MEMOIZE: u8 = 0x94;

/// CPython's `_FRAME_SIZE_TARGET`: a frame is committed at the first object boundary
/// at or past this size.
const FRAME_SIZE_TARGET: usize = 64 * 1024;
/// CPython's `_FRAME_SIZE_MIN`: smaller frames are written without a `FRAME` header.
const FRAME_SIZE_MIN: usize = 4;

/// A pickle being written: the bytes so far and where the open frame's payload starts.
pub struct Pickler<'a> {
    buf: &'a mut Vec<u8>,
    /// Index in `buf` of the open frame's header (its 9 bytes are reserved).
    frame_start: usize,
}

impl<'a> Pickler<'a> {
    /// Starts a protocol-5 pickle at the end of `buf`.
    pub fn start(buf: &'a mut Vec<u8>) -> Self {
        buf.extend_from_slice(&[PROTO, 5]);
        let frame_start = buf.len();
        buf.extend_from_slice(&[0; 9]);
        Self { buf, frame_start }
    }

    /// Writes `STOP` and closes the last frame.
    pub fn finish(mut self) {
        self.buf.push(STOP);
        self.commit_frame();
    }

    /// CPython checks the frame size before saving each object (`framer.commit_frame()`
    /// at the top of `save`): a full frame is closed and a new one opened.
    fn boundary(&mut self) {
        if self.buf.len() - self.frame_start - 9 >= FRAME_SIZE_TARGET {
            self.commit_frame();
            self.open_frame();
        }
    }

    fn open_frame(&mut self) {
        self.frame_start = self.buf.len();
        self.buf.extend_from_slice(&[0; 9]);
    }

    fn commit_frame(&mut self) {
        let payload = self.buf.len() - self.frame_start - 9;
        if payload >= FRAME_SIZE_MIN {
            self.buf[self.frame_start] = FRAME;
            self.buf[self.frame_start + 1..self.frame_start + 9]
                .copy_from_slice(&(payload as u64).to_le_bytes());
        } else {
            self.buf.drain(self.frame_start..self.frame_start + 9);
        }
    }

    pub fn none(&mut self) {
        self.boundary();
        self.buf.push(NONE);
    }

    pub fn int(&mut self, v: i64) {
        self.boundary();
        if (0..=0xff).contains(&v) {
            self.buf.extend_from_slice(&[BININT1, v as u8]);
        } else if (0..=0xffff).contains(&v) {
            self.buf.push(BININT2);
            self.buf.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i64::from(i32::MIN) <= v && v <= i64::from(i32::MAX) {
            self.buf.push(BININT);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // Shortest two's complement: drop redundant sign bytes from the top.
            let bytes = v.to_le_bytes();
            let mut n = 8;
            while n > 1 {
                let top = bytes[n - 1];
                let below_sign = bytes[n - 2] & 0x80;
                if (top == 0 && below_sign == 0) || (top == 0xff && below_sign != 0) {
                    n -= 1;
                } else {
                    break;
                }
            }
            self.buf.extend_from_slice(&[LONG1, n as u8]);
            self.buf.extend_from_slice(&bytes[..n]);
        }
    }

    pub fn bytes(&mut self, b: &[u8]) {
        let mut head = Vec::with_capacity(5);
        if b.len() < 256 {
            head.extend_from_slice(&[SHORT_BINBYTES, b.len() as u8]);
        } else {
            head.push(BINBYTES);
            head.extend_from_slice(&(b.len() as u32).to_le_bytes());
        }
        self.sized(&head, b);
    }

    pub fn str(&mut self, s: &str) {
        let mut head = Vec::with_capacity(5);
        if s.len() < 256 {
            head.extend_from_slice(&[SHORT_BINUNICODE, s.len() as u8]);
        } else {
            head.push(BINUNICODE);
            head.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        self.sized(&head, s.as_bytes());
    }

    /// A `bytes` or `str` and its `MEMOIZE`. CPython writes one of 64 KiB or more outside
    /// any frame (`write_large_bytes`): the open frame is closed first, a new one opened
    /// after.
    fn sized(&mut self, head: &[u8], payload: &[u8]) {
        self.boundary();
        if payload.len() >= FRAME_SIZE_TARGET {
            self.commit_frame();
            self.buf.extend_from_slice(head);
            self.buf.extend_from_slice(payload);
            self.open_frame();
        } else {
            self.buf.extend_from_slice(head);
            self.buf.extend_from_slice(payload);
        }
        self.buf.push(MEMOIZE);
    }

    /// A tuple of `len` items: call before writing them; [`Pickler::end_tuple`] after.
    pub fn begin_tuple(&mut self, len: usize) {
        self.boundary();
        if len > 3 {
            self.buf.push(MARK);
        }
    }

    pub fn end_tuple(&mut self, len: usize) {
        match len {
            0 => {
                self.buf.push(EMPTY_TUPLE);
                return;
            }
            1 => self.buf.push(TUPLE1),
            2 => self.buf.push(TUPLE2),
            3 => self.buf.push(TUPLE3),
            _ => self.buf.push(TUPLE),
        }
        self.buf.push(MEMOIZE);
    }

    pub fn tuple_of_ints(&mut self, items: &[u32]) {
        self.begin_tuple(items.len());
        for &t in items {
            self.int(i64::from(t));
        }
        self.end_tuple(items.len());
    }

    pub fn extra_keys(&mut self, keys: &[ExtraKey]) {
        self.begin_tuple(keys.len());
        for key in keys {
            match key {
                ExtraKey::Text(s) => self.str(s),
                ExtraKey::Int(v) => self.int(*v),
                ExtraKey::Tuple(items) => self.extra_keys(items),
            }
        }
        self.end_tuple(keys.len());
    }
}

/// `pickle.dumps(s, protocol=5)` of a Python `str`.
pub fn pickle_str(buf: &mut Vec<u8>, s: &str) {
    let mut p = Pickler::start(buf);
    p.str(s);
    p.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: i64) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut p = Pickler::start(&mut buf);
        p.int(v);
        p.finish();
        buf
    }

    // Spot checks typed from the pickle protocol's opcode table; the byte-exact proof
    // against CPython is the generated vectors (tests/vectors, blockhash/tests).
    #[test]
    fn ints_use_the_opcode_of_their_size() {
        // Under 4 bytes of payload: no FRAME header at all.
        assert_eq!(ints(7), [PROTO, 5, BININT1, 7, STOP]);
        assert_eq!(&ints(300)[11..14], &[BININT2, 0x2c, 0x01]);
        assert_eq!(&ints(-1)[11..16], &[BININT, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&ints(1 << 31)[11..18], &[LONG1, 5, 0, 0, 0, 0x80, 0]);
        assert_eq!(&ints(-(1 << 40))[11..19], &[LONG1, 6, 0, 0, 0, 0, 0, 0xff]);
    }

    #[test]
    fn a_small_value_sits_in_one_frame() {
        let mut buf = Vec::new();
        pickle_str(&mut buf, "42");
        // PROTO 5, FRAME len=6, SHORT_BINUNICODE 2 "42", MEMOIZE, STOP
        assert_eq!(
            buf,
            [0x80, 5, 0x95, 6, 0, 0, 0, 0, 0, 0, 0, 0x8c, 2, b'4', b'2', 0x94, b'.']
        );
    }

    #[test]
    fn a_frame_closes_at_the_first_boundary_past_64_kib() {
        // 30,000 ints of 5 bytes (BININT): the first frame ends at the first int at or
        // past 65,536 bytes of payload, the rest goes into a second frame.
        let tokens: Vec<u32> = (0..30_000).map(|i| 70_000 + i).collect();
        let mut buf = Vec::new();
        let mut p = Pickler::start(&mut buf);
        p.tuple_of_ints(&tokens);
        p.finish();
        assert_eq!(buf[2], FRAME);
        let first = u64::from_le_bytes(buf[3..11].try_into().expect("8 bytes")) as usize;
        // MARK (1 byte) then whole 5-byte ints until the payload reaches 64 KiB.
        assert_eq!(first, 1 + 5 * (FRAME_SIZE_TARGET - 1).div_ceil(5));
        assert_eq!(buf[11 + first], FRAME);
    }
}
