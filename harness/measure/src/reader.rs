//! Checked little-endian reads over untrusted bytes: the one reader of the parsers in `measure`
//! and `evidence`. Every read names its field; a read past the end is a [`Truncated`] naming the
//! field and the offset, never a panic. Each parser keeps its own error type, with a
//! `From<Truncated>` into it.

use crate::uefi::Guid;

/// A read that needed more bytes than were left.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("truncated at offset {offset}: {field} needs {needed} bytes, {available} left")]
pub struct Truncated {
    pub field: &'static str,
    pub offset: usize,
    pub needed: usize,
    pub available: usize,
}

#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// A reader at `pos` of `bytes`; offsets in its errors count from the start of `bytes`.
    pub fn at(bytes: &'a [u8], pos: usize) -> Reader<'a> {
        Reader { bytes, pos }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// The bytes not read yet (none when the position is past the end).
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or(&[])
    }

    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Truncated> {
        let available = self.remaining();
        let end = self.pos.checked_add(n).filter(|_| n <= available);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Truncated {
                field,
                offset: self.pos,
                needed: n,
                available,
            }),
        }
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, Truncated> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub fn guid(&mut self, field: &'static str) -> Result<Guid, Truncated> {
        Ok(Guid(self.array(field)?))
    }

    /// A blob whose length is the `u32` before it.
    pub fn sized32(&mut self, field: &'static str) -> Result<&'a [u8], Truncated> {
        let len = self.u32(field)?;
        self.bytes(len as usize, field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_names_the_field_and_offset_past_the_end() {
        let bytes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u16("a"), Ok(0x0201));
        assert_eq!(r.u32("b"), Ok(0x0605_0403));
        assert_eq!(r.rest(), [0x07]);
        let e = r.u16("c").unwrap_err();
        assert_eq!(
            e,
            Truncated {
                field: "c",
                offset: 6,
                needed: 2,
                available: 1
            }
        );
        assert_eq!(
            e.to_string(),
            "truncated at offset 6: c needs 2 bytes, 1 left"
        );
        // A failed read moves nothing; a reader placed past the end has nothing left.
        assert_eq!(r.u8("d"), Ok(0x07));
        let mut past = Reader::at(&bytes, 9);
        assert_eq!((past.remaining(), past.rest()), (0, &[][..]));
        assert!(past.bytes(usize::MAX, "huge").is_err());
    }

    #[test]
    fn a_sized_blob_is_checked_against_what_is_left() {
        let mut r = Reader::new(&[3, 0, 0, 0, 9, 8, 7]);
        assert_eq!(r.sized32("blob"), Ok(&[9, 8, 7][..]));
        let mut short = Reader::new(&[4, 0, 0, 0, 9]);
        assert_eq!(short.sized32("blob").unwrap_err().offset, 4);
    }
}
