//! The UEFI decompression algorithm (UEFI spec, "Compression Algorithm Specification";
//! edk2 `MdePkg/Library/BaseUefiDecompressLib`, version 1): what `EFI_DECOMPRESS_PROTOCOL`
//! does to a PCI option ROM image whose ROM header says CompressionType 1.
//!
//! Format: `CompSize: u32 LE`, `OrigSize: u32 LE`, then `CompSize` bytes of a bit stream read
//! most-significant bit first (past its end firmware reads zero bits). The stream is LZ77 with
//! Huffman coding, in blocks. Each block holds: a 16-bit count of codes, the code lengths of
//! the "extra" set (19 symbols, used to code the char/length code lengths), the char/length
//! set (510 symbols: 0–255 literal bytes, 256–509 match lengths 3–256) and the position set
//! (symbol `p` means a distance of `p` for p ≤ 1, else `2^(p-1)` plus `p-1` more bits; the
//! match copies from `distance + 1` bytes back).
//!
//! Written from the spec and edk2's behaviour, as a plain canonical-Huffman decoder (codes
//! assigned by length, then symbol order, like edk2's `MakeTable`) rather than edk2's lookup
//! tables. Where edk2 would go on with a corrupt table (it ignores `MakeTable`'s result for
//! the char/length set, and a lone symbol past the set's end indexes stale memory), this
//! decoder returns an error instead: no real compressor emits such streams.
//!
//! `mu_uefi_decompress` (Project Mu) exists on crates.io but is deprecated in favour of the
//! whole `patina` firmware crate; a 200-line decoder is smaller than either dependency.

use thiserror::Error;

/// `OrigSize` above this is refused before any allocation: no option ROM image comes close
/// (a ROM BAR is at most 16 MiB), and a 8-byte header must not make us allocate 4 GiB.
pub const MAX_ORIGINAL_SIZE: u32 = 64 << 20;

/// Symbols in the char/length set: 256 literals and match lengths 3..=256.
const NC: usize = 0xff + MAXMATCH + 2 - THRESHOLD;
const MAXMATCH: usize = 256;
const THRESHOLD: usize = 3;
/// Bits of the char/length set's length-array size.
const CBIT: u32 = 9;
/// Symbols in the extra set (code lengths 0..=16 plus three zero-run codes).
const NT: usize = 19;
/// Bits of the extra set's length-array size.
const TBIT: u32 = 5;
/// Bits of the position set's length-array size in version 1 (UEFI); Tiano's version 2 uses 5.
const PBIT: u32 = 4;
/// Size of edk2's shared length array for the extra and position sets (its `NPT`).
const NPT: usize = 31;
/// Symbols of the position set as edk2 builds its table (`MAXNP`, for both versions).
const MAXNP: usize = 31;
/// The extra-set index after which a 2-bit zero-run count follows.
const EXTRA_SET_SPECIAL: usize = 3;
const MAX_CODE_LENGTH: u8 = 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("compressed header: need 8 bytes, have {len}")]
    Header { len: usize },
    #[error("CompSize {compressed} + 8 exceeds the {available} bytes given")]
    CompressedSize { compressed: u32, available: usize },
    #[error("OrigSize {original} exceeds the {MAX_ORIGINAL_SIZE}-byte limit")]
    TooLarge { original: u32 },
    #[error("{table} table at bit {bit}: {reason}")]
    BadTable {
        table: &'static str,
        bit: u64,
        reason: String,
    },
    #[error("match at output offset {output}: distance {distance} reaches before the start")]
    BadDistance { output: usize, distance: u64 },
}

/// The decompressed size a compressed buffer declares, after edk2 `UefiDecompressGetInfo`'s
/// checks (8-byte header, CompSize within the buffer).
pub fn original_size(src: &[u8]) -> Result<u32, DecompressError> {
    let header = src
        .get(..8)
        .ok_or(DecompressError::Header { len: src.len() })?;
    let compressed = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let original = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if u64::from(compressed) + 8 > src.len() as u64 {
        return Err(DecompressError::CompressedSize {
            compressed,
            available: src.len(),
        });
    }
    Ok(original)
}

/// Decompress a UEFI-compressed buffer (version 1). The result is exactly `OrigSize` bytes.
pub fn decompress(src: &[u8]) -> Result<Vec<u8>, DecompressError> {
    let original = original_size(src)?;
    if original > MAX_ORIGINAL_SIZE {
        return Err(DecompressError::TooLarge { original });
    }
    let compressed = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
    // In range: original_size checked CompSize + 8 <= len.
    let stream = &src[8..8 + compressed];
    Decoder {
        bits: BitReader {
            data: stream,
            pos: 0,
        },
        out: Vec::with_capacity(original as usize),
        original: original as usize,
    }
    .run()
}

/// MSB-first bits of the stream; zero bits past its end, as edk2's `FillBuf` pads.
struct BitReader<'a> {
    data: &'a [u8],
    pos: u64,
}

impl BitReader<'_> {
    fn bit(&mut self) -> u32 {
        let byte = usize::try_from(self.pos / 8)
            .ok()
            .and_then(|i| self.data.get(i))
            .copied()
            .unwrap_or(0);
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        u32::from(bit)
    }

    /// `n` ≤ 32 bits as an integer, first bit most significant.
    fn bits(&mut self, n: u32) -> u32 {
        (0..n).fold(0u32, |acc, _| (acc << 1) | self.bit())
    }
}

/// A canonical Huffman code: `counts[l]` codes of length `l`, symbols ordered by (length,
/// symbol). `Single` is the block header's "only one symbol" form, which costs no bits.
enum Huffman {
    Single(u16),
    Canonical {
        counts: [u16; MAX_CODE_LENGTH as usize + 1],
        symbols: Vec<u16>,
    },
}

impl Huffman {
    fn single(
        symbol: u32,
        symbols: usize,
        table: &'static str,
        bit: u64,
    ) -> Result<Huffman, DecompressError> {
        if symbol as usize >= symbols {
            return Err(DecompressError::BadTable {
                table,
                bit,
                reason: format!("lone symbol {symbol} outside the {symbols}-symbol set"),
            });
        }
        Ok(Huffman::Single(symbol as u16))
    }

    /// Build from per-symbol code lengths (0 = unused). The code must be complete (Kraft sum
    /// exactly 1), which is what edk2's `MakeTable` accepts; an all-zero array builds a code
    /// that fails only if a symbol is ever decoded from it.
    fn from_lengths(
        lengths: &[u8],
        table: &'static str,
        bit: u64,
    ) -> Result<Huffman, DecompressError> {
        let bad = |reason: String| DecompressError::BadTable { table, bit, reason };
        let mut counts = [0u16; MAX_CODE_LENGTH as usize + 1];
        for (symbol, &len) in lengths.iter().enumerate() {
            if len > MAX_CODE_LENGTH {
                return Err(bad(format!(
                    "symbol {symbol} has code length {len} (max 16)"
                )));
            }
            if len > 0 {
                counts[len as usize] += 1;
            }
        }
        let kraft: u64 = (1..=MAX_CODE_LENGTH as usize)
            .map(|l| u64::from(counts[l]) << (MAX_CODE_LENGTH as usize - l))
            .sum();
        if kraft != 0 && kraft != 1 << MAX_CODE_LENGTH {
            return Err(bad(format!(
                "code lengths are not a complete prefix code (Kraft sum {kraft}/65536)"
            )));
        }
        let mut symbols: Vec<u16> = (0..lengths.len() as u16)
            .filter(|&s| lengths[s as usize] > 0)
            .collect();
        symbols.sort_by_key(|&s| lengths[s as usize]);
        Ok(Huffman::Canonical { counts, symbols })
    }

    fn decode(&self, bits: &mut BitReader, table: &'static str) -> Result<u16, DecompressError> {
        let (counts, symbols) = match self {
            Huffman::Single(symbol) => return Ok(*symbol),
            Huffman::Canonical { counts, symbols } => (counts, symbols),
        };
        let start = bits.pos;
        // First code of the current length, and index of its symbol in `symbols`.
        let (mut code, mut first, mut index) = (0u32, 0u32, 0u32);
        for &count in &counts[1..] {
            code |= bits.bit();
            let count = u32::from(count);
            if code < first + count {
                if let Some(&symbol) = symbols.get((index + code - first) as usize) {
                    return Ok(symbol);
                }
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err(DecompressError::BadTable {
            table,
            bit: start,
            reason: "no code matches (empty table)".into(),
        })
    }
}

struct Decoder<'a> {
    bits: BitReader<'a>,
    out: Vec<u8>,
    original: usize,
}

impl Decoder<'_> {
    fn run(mut self) -> Result<Vec<u8>, DecompressError> {
        // Codes left in the current block; the first code reads the first block header.
        let mut remaining_in_block: u32 = 0;
        let (mut chars, mut positions) = (Huffman::Single(0), Huffman::Single(0));
        while self.out.len() < self.original {
            if remaining_in_block == 0 {
                // edk2 decrements its 16-bit count after each code and reads a new header at
                // zero, so a header count of 0 means 65536 codes.
                remaining_in_block = match self.bits.bits(16) {
                    0 => 1 << 16,
                    n => n,
                };
                (chars, positions) = self.block_tables()?;
            }
            remaining_in_block -= 1;
            let symbol = usize::from(chars.decode(&mut self.bits, "char/length")?);
            if symbol < 256 {
                self.out.push(symbol as u8);
                continue;
            }
            let length = symbol - (256 - THRESHOLD);
            let distance = self.position(&positions)?;
            let output = self.out.len();
            let from = u64::try_from(output)
                .ok()
                .and_then(|o| o.checked_sub(distance + 1))
                .ok_or(DecompressError::BadDistance { output, distance })?
                as usize;
            // Byte by byte: a match may overlap the bytes it produces. It stops at OrigSize.
            for i in 0..length.min(self.original - output) {
                let byte = self.out[from + i];
                self.out.push(byte);
            }
        }
        Ok(self.out)
    }

    /// A block header's three tables; returns (char/length, position).
    fn block_tables(&mut self) -> Result<(Huffman, Huffman), DecompressError> {
        let extra = self.small_table(NT, TBIT, Some(EXTRA_SET_SPECIAL), "extra")?;
        let chars = self.char_table(&extra)?;
        let positions = self.small_table(MAXNP, PBIT, None, "position")?;
        Ok((chars, positions))
    }

    /// The extra or position set (edk2 `ReadPTLen`): a count, then that many code lengths,
    /// each as 3 bits or, from 7 up, as `7 + n` written `111` then n ones and a zero.
    fn small_table(
        &mut self,
        symbols: usize,
        count_bits: u32,
        special: Option<usize>,
        table: &'static str,
    ) -> Result<Huffman, DecompressError> {
        let start = self.bits.pos;
        let count = self.bits.bits(count_bits) as usize;
        if count == 0 {
            let lone = self.bits.bits(count_bits);
            return Huffman::single(lone, symbols, table, start);
        }
        // edk2 reads up to NPT lengths into a shared array and then uses the first `symbols`.
        let mut lengths = Vec::with_capacity(NPT);
        while lengths.len() < count.min(NPT) {
            let mut len = self.bits.bits(3);
            if len == 7 {
                while self.bits.bit() == 1 {
                    len += 1;
                    if len > u32::from(MAX_CODE_LENGTH) {
                        return Err(DecompressError::BadTable {
                            table,
                            bit: start,
                            reason: format!(
                                "code length {len}+ for symbol {} (max 16)",
                                lengths.len()
                            ),
                        });
                    }
                }
            }
            lengths.push(len as u8);
            if Some(lengths.len()) == special {
                let zeros = self.bits.bits(2) as usize;
                let run = zeros.min(NPT - lengths.len());
                lengths.resize(lengths.len() + run, 0);
            }
        }
        lengths.resize(symbols, 0);
        Huffman::from_lengths(&lengths, table, start)
    }

    /// The char/length set (edk2 `ReadCLen`): code lengths coded with the extra set, where
    /// extra symbols 0, 1, 2 are runs of 1, 3–18 and 20–531 zero lengths and symbol `s` ≥ 3 is
    /// length `s - 2`.
    fn char_table(&mut self, extra: &Huffman) -> Result<Huffman, DecompressError> {
        let start = self.bits.pos;
        let count = self.bits.bits(CBIT) as usize;
        if count == 0 {
            let lone = self.bits.bits(CBIT);
            return Huffman::single(lone, NC, "char/length", start);
        }
        let mut lengths = Vec::with_capacity(NC);
        while lengths.len() < count.min(NC) {
            let symbol = extra.decode(&mut self.bits, "extra")?;
            let zeros = match symbol {
                0 => 1,
                1 => self.bits.bits(4) as usize + 3,
                2 => self.bits.bits(CBIT) as usize + 20,
                len => {
                    lengths.push((len - 2) as u8);
                    continue;
                }
            };
            let run = zeros.min(NC - lengths.len());
            lengths.resize(lengths.len() + run, 0);
        }
        lengths.resize(NC, 0);
        Huffman::from_lengths(&lengths, "char/length", start)
    }

    /// A match distance minus one (edk2 `DecodeP`).
    fn position(&mut self, positions: &Huffman) -> Result<u64, DecompressError> {
        let symbol = u32::from(positions.decode(&mut self.bits, "position")?);
        Ok(if symbol <= 1 {
            u64::from(symbol)
        } else {
            (1u64 << (symbol - 1)) + u64::from(self.bits.bits(symbol - 1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text given to edk2's own compressor (BaseTools `EfiCompress`, edk2-stable202211,
    /// built from source) to produce [`SMALL_COMPRESSED`].
    fn small_text() -> Vec<u8> {
        let mut t = b"PCI option ROM images may be stored compressed with the UEFI compression \
algorithm: LZ77 with Huffman coding. PCI option ROM images may be stored compressed; PciBusDxe \
decompresses them before LoadImage, and LoadImage measures the decompressed PE image. "
            .to_vec();
        t.extend(std::iter::repeat_n(b'a', 257));
        t.extend_from_slice(b" end.\n");
        t
    }

    /// edk2 `EfiCompress` output for [`small_text`] (164 bytes).
    const SMALL_COMPRESSED: &str = "9c0000000502000000935a92d625bfd8ffe807ec887150ac3fe989062482c1b0fd3ef2bc1777277b92ad397220c5a0db57b4c00365caf6d21f8458f70e7cb88634ae450d2f43b2058be0862c7b70822aca2f0c8de237a0e946fa74b193a5dee7c2575bac55d679f3278636dad27488363ae987dd6ec15d8cffc577794069a575cbc03648db23c54f23a72c3ea04e3f7306a12e30ccdf8f18ae8cf73302fdc11c737f0000";

    #[test]
    fn decompresses_edk2_output() {
        let src = hex::decode(SMALL_COMPRESSED).unwrap();
        assert_eq!(small_text().len(), 517);
        assert_eq!(decompress(&src).unwrap(), small_text());
    }

    #[test]
    fn decompresses_edk2_edge_cases() {
        // EfiCompress of the empty input and of the single byte "A".
        let empty = hex::decode("08000000000000000000000000000000").unwrap();
        assert_eq!(decompress(&empty).unwrap(), b"");
        let one = hex::decode("08000000010000000001000004100000").unwrap();
        assert_eq!(decompress(&one).unwrap(), b"A");
    }

    #[test]
    fn header_checks_follow_get_info() {
        assert_eq!(decompress(&[0; 7]), Err(DecompressError::Header { len: 7 }));
        let mut src = hex::decode(SMALL_COMPRESSED).unwrap();
        src.truncate(100);
        assert_eq!(
            decompress(&src),
            Err(DecompressError::CompressedSize {
                compressed: 0x9c,
                available: 100
            })
        );
        let huge = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decompress(&huge),
            Err(DecompressError::TooLarge { original: u32::MAX })
        );
    }

    #[test]
    fn corrupt_streams_end_in_error_or_other_bytes_never_panic() {
        let src = hex::decode(SMALL_COMPRESSED).unwrap();
        let mut changed = 0;
        for bit in 0..src.len() * 8 {
            let mut flipped = src.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            if decompress(&flipped).as_deref() != Ok(&small_text()[..]) {
                changed += 1;
            }
        }
        // Every flip in the stream proper changes the outcome except padding bits at its end.
        assert!(
            changed > src.len() * 8 * 9 / 10,
            "{changed} of {} flips noticed",
            src.len() * 8
        );
        for len in 0..src.len() {
            let mut cut = src[..len].to_vec();
            if len >= 8 {
                // Keep CompSize consistent so the stream, not the header check, is exercised.
                cut[..4].copy_from_slice(&((len - 8) as u32).to_le_bytes());
            }
            let _ = decompress(&cut);
        }
    }
}
