//! A msgpack reader over a borrowed slice, for the decoder's hot path.
//!
//! Building a generic `rmpv::Value` tree for every token id of every event cost more than
//! the indexer's whole per-block budget, so the fields that dominate a payload (token ids,
//! block hashes) are read straight from the bytes. Unknown fields are skipped without
//! building anything and without recursion (a deeply nested message cannot overflow the
//! stack); only `extra_keys` entries become `rmpv` values, after their extent was found and
//! charged, to a bounded depth. Every read checks bounds and returns `None` instead
//! of panicking; every count read from the wire is checked against the bytes left (each
//! element takes at least one) and every allocation is charged to the message's budget
//! ([`crate::limits`]) before it is made.

use rmpv::Value;

use crate::limits::{MAX_DECODED_BYTES_PER_BYTE, MIN_DECODE_BUDGET};

/// Deepest value [`Reader::value`] measures (its fixed stack).
const MAX_VALUE_DEPTH: usize = 16;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Bytes the decoded message may still allocate.
    budget: usize,
    /// Set once a charge did not fit: the message is refused whole.
    over_budget: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            budget: buf
                .len()
                .saturating_mul(MAX_DECODED_BYTES_PER_BYTE)
                .saturating_add(MIN_DECODE_BUDGET),
            over_budget: false,
        }
    }

    /// Reserve `bytes` of the message's decode budget; `None` (and the message refused)
    /// when they do not fit.
    pub(crate) fn charge(&mut self, bytes: usize) -> Option<()> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                Some(())
            }
            None => {
                self.over_budget = true;
                None
            }
        }
    }

    pub(crate) fn over_budget(&self) -> bool {
        self.over_budget
    }

    /// A count of elements read from the wire, if the bytes left can hold that many.
    pub(crate) fn fits(&self, count: usize) -> Option<usize> {
        (count <= self.remaining()).then_some(count)
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    /// Bytes not yet read: an upper bound for any count read from the wire.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn len_after(&mut self, marker: u8, fix_lo: u8, fix_hi: u8, m16: u8, m32: u8) -> Option<usize> {
        if (fix_lo..=fix_hi).contains(&marker) {
            return Some(usize::from(marker - fix_lo));
        }
        if marker == m16 {
            return Some(usize::from(u16::from_be_bytes(self.be()?)));
        }
        if marker == m32 {
            return usize::try_from(u32::from_be_bytes(self.be()?)).ok();
        }
        None
    }

    /// Consumes a nil if one is next.
    pub(crate) fn nil(&mut self) -> bool {
        if self.peek() == Some(0xc0) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn array_len(&mut self) -> Option<usize> {
        let start = self.pos;
        let m = self.byte()?;
        let n = self.len_after(m, 0x90, 0x9f, 0xdc, 0xdd);
        if n.is_none() {
            self.pos = start;
        }
        n
    }

    pub(crate) fn map_len(&mut self) -> Option<usize> {
        let start = self.pos;
        let m = self.byte()?;
        let n = self.len_after(m, 0x80, 0x8f, 0xde, 0xdf);
        if n.is_none() {
            self.pos = start;
        }
        n
    }

    pub(crate) fn str(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let m = self.byte()?;
        let n = match m {
            0xa0..=0xbf => Some(usize::from(m - 0xa0)),
            0xd9 => self.byte().map(usize::from),
            0xda => self.be().map(|b| usize::from(u16::from_be_bytes(b))),
            0xdb => self
                .be()
                .and_then(|b| usize::try_from(u32::from_be_bytes(b)).ok()),
            _ => None,
        };
        let s = n
            .and_then(|n| self.take(n))
            .and_then(|b| std::str::from_utf8(b).ok());
        if s.is_none() {
            self.pos = start;
        }
        s
    }

    pub(crate) fn bin(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let m = self.byte()?;
        let n = match m {
            0xc4 => self.byte().map(usize::from),
            0xc5 => self.be().map(|b| usize::from(u16::from_be_bytes(b))),
            0xc6 => self
                .be()
                .and_then(|b| usize::try_from(u32::from_be_bytes(b)).ok()),
            _ => None,
        };
        let b = n.and_then(|n| self.take(n));
        if b.is_none() {
            self.pos = start;
        }
        b
    }

    /// Any msgpack int as its 64 bits (negative ints as their two's complement), and
    /// whether it was negative.
    pub(crate) fn int(&mut self) -> Option<(u64, bool)> {
        let start = self.pos;
        let m = self.byte()?;
        let v = match m {
            0x00..=0x7f => Some((u64::from(m), false)),
            0xe0..=0xff => Some((i64::from(m as i8) as u64, true)),
            0xcc => self.byte().map(|b| (u64::from(b), false)),
            0xcd => self.be().map(|b| (u64::from(u16::from_be_bytes(b)), false)),
            0xce => self.be().map(|b| (u64::from(u32::from_be_bytes(b)), false)),
            0xcf => self.be().map(|b| (u64::from_be_bytes(b), false)),
            0xd0 => self.be().map(|b| signed(i64::from(i8::from_be_bytes(b)))),
            0xd1 => self.be().map(|b| signed(i64::from(i16::from_be_bytes(b)))),
            0xd2 => self.be().map(|b| signed(i64::from(i32::from_be_bytes(b)))),
            0xd3 => self.be().map(|b| signed(i64::from_be_bytes(b))),
            _ => None,
        };
        if v.is_none() {
            self.pos = start;
        }
        v
    }

    /// A non-negative int that fits in u32.
    pub(crate) fn u32(&mut self) -> Option<u32> {
        let start = self.pos;
        let v = match self.int()? {
            (v, false) => u32::try_from(v).ok(),
            _ => None,
        };
        if v.is_none() {
            self.pos = start;
        }
        v
    }

    /// A float, or an int read as one.
    pub(crate) fn f64(&mut self) -> Option<f64> {
        match self.peek()? {
            0xca => {
                self.pos += 1;
                self.be().map(|b| f64::from(f32::from_be_bytes(b)))
            }
            0xcb => {
                self.pos += 1;
                self.be().map(f64::from_be_bytes)
            }
            _ => self
                .int()
                .map(|(v, neg)| if neg { v as i64 as f64 } else { v as f64 }),
        }
    }

    /// The next value as a generic tree, if it is msgpack nested at most `max_depth`
    /// deep. Its depth and size are measured (without recursion or allocation) and charged
    /// before rmpv builds it.
    pub(crate) fn value(&mut self, max_depth: usize) -> Option<Value> {
        let start = self.pos;
        let built = self.measure(max_depth).and_then(|(values, bytes)| {
            // rmpv grows its vectors by doubling: twice the values, at worst.
            self.charge(
                values
                    .saturating_mul(2 * std::mem::size_of::<Value>())
                    .saturating_add(bytes),
            )?;
            let mut span = &self.buf[start..self.pos];
            rmpv::decode::read_value_with_max_depth(&mut span, max_depth + 1).ok()
        });
        if built.is_none() {
            self.pos = start;
        }
        built
    }

    /// Passes the next value, returning how many values it holds (itself included) and
    /// how many string, binary and extension bytes; `None` if it nests deeper than
    /// `max_depth` (at most [`MAX_VALUE_DEPTH`]) or is not msgpack.
    fn measure(&mut self, max_depth: usize) -> Option<(usize, usize)> {
        let max_depth = max_depth.min(MAX_VALUE_DEPTH);
        let mut open = [0usize; MAX_VALUE_DEPTH];
        let (mut depth, mut left) = (0, 1usize);
        let (mut values, mut bytes) = (0usize, 0usize);
        loop {
            while left == 0 {
                if depth == 0 {
                    return Some((values, bytes));
                }
                depth -= 1;
                left = open[depth];
            }
            left -= 1;
            values += 1;
            let before = self.pos;
            let children = self.skip_header()?;
            if children == 0 {
                bytes += self.pos - before;
                continue;
            }
            if depth == max_depth {
                return None;
            }
            self.fits(children)?;
            open[depth] = left;
            depth += 1;
            left = children;
        }
    }

    /// Skips the next value, however deeply nested, without recursing or allocating:
    /// it only counts the values still to pass, never more than the bytes left. `None`
    /// (position unchanged) if it is not msgpack or is truncated.
    pub(crate) fn skip(&mut self) -> Option<()> {
        let start = self.pos;
        let mut left = 1usize;
        while left > 0 {
            left -= 1;
            let passed = self
                .skip_header()
                .and_then(|children| left.checked_add(children))
                .filter(|&n| n <= self.remaining());
            match passed {
                Some(n) => left = n,
                None => {
                    self.pos = start;
                    return None;
                }
            }
        }
        Some(())
    }

    /// Consumes one value's header (and a scalar's body); returns how many values a
    /// container holds (a map's keys and values both count).
    fn skip_header(&mut self) -> Option<usize> {
        let m = self.byte()?;
        let body = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => return Some(usize::from(m - 0x80) * 2),
            0x90..=0x9f => return Some(usize::from(m - 0x90)),
            0xa0..=0xbf => usize::from(m - 0xa0),
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 | 0xd4 => 2,
            0xd5 => 3,
            0xca | 0xce | 0xd2 => 4,
            0xd6 => 5,
            0xcb | 0xcf | 0xd3 => 8,
            0xd7 => 9,
            0xd8 => 17,
            0xc4 | 0xd9 => usize::from(self.byte()?),
            0xc5 | 0xda => usize::from(u16::from_be_bytes(self.be()?)),
            0xc6 | 0xdb => usize::try_from(u32::from_be_bytes(self.be()?)).ok()?,
            0xc7 => 1 + usize::from(self.byte()?),
            0xc8 => 1 + usize::from(u16::from_be_bytes(self.be()?)),
            0xc9 => 1 + usize::try_from(u32::from_be_bytes(self.be()?)).ok()?,
            0xdc => return Some(usize::from(u16::from_be_bytes(self.be()?))),
            0xdd => return usize::try_from(u32::from_be_bytes(self.be()?)).ok(),
            0xde => return Some(usize::from(u16::from_be_bytes(self.be()?)) * 2),
            0xdf => {
                return usize::try_from(u32::from_be_bytes(self.be()?))
                    .ok()?
                    .checked_mul(2)
            }
            // 0xc1 is never used.
            _ => return None,
        };
        self.take(body).map(|_| 0)
    }
}

fn signed(v: i64) -> (u64, bool) {
    (v as u64, v < 0)
}
