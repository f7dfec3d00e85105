//! A msgpack reader over a borrowed slice, for the decoder's hot path.
//!
//! Building a generic `rmpv::Value` tree for every token id of every event cost more than
//! the indexer's whole per-block budget, so the fields that dominate a payload (token ids,
//! block hashes) are read straight from the bytes. Everything rare (extra keys, unknown
//! fields) still goes through rmpv. Every read checks bounds and returns `None` instead of
//! panicking; lengths read from the wire never size an allocation beyond the bytes left.

use rmpv::Value;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
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

    /// The next value as a generic tree (rare fields), or `None` if it is not msgpack.
    pub(crate) fn value(&mut self) -> Option<Value> {
        let mut rest = self.buf.get(self.pos..)?;
        let before = rest.len();
        let v = rmpv::decode::read_value(&mut rest).ok()?;
        self.pos += before - rest.len();
        Some(v)
    }

    pub(crate) fn skip(&mut self) -> Option<()> {
        self.value().map(|_| ())
    }
}

fn signed(v: i64) -> (u64, bool) {
    (v as u64, v < 0)
}
