//! The EV_EFI_GPT_EVENT (PCR5): UEFI_GPT_DATA built from a disk image, as edk2
//! `DxeTpm2MeasureBootLib` `Tcg2MeasureGptTable` builds it when it boots from that disk.
//!
//! UEFI_GPT_DATA (`MdePkg/Include/IndustryStandard/UefiTcgPlatform.h`, packed) is the 92-byte
//! primary header, `NumberOfPartitions` as a UINT64 (UINTN on x64), then every entry whose
//! PartitionTypeGUID is not zero, in table order, each SizeOfPartitionEntry bytes. The digest
//! covers exactly that. The header must pass the checks of edk2 `GptLib`
//! `PartitionValidGptTable` (signature, revision 1.0, HeaderSize, header CRC32, MyLBA,
//! entry size 128·2ⁿ, entry array CRC32); edk2 before stable202502 measured LBA 1 without CRC
//! checks, which gives the same event for any table that passes them.
//!
//! Not modelled: when the primary header is invalid, current edk2 falls back to the backup
//! header; this module reports the primary's defect instead.

use crate::event::{Event, EventType, Input};
use crate::reader::{Reader, Truncated};
use crate::uefi::{Guid, UefiError};
use thiserror::Error;

pub const HEADER_SIZE: usize = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION_1_0: u32 = 0x0001_0000;
const MIN_ENTRY_SIZE: u32 = 128;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GptError {
    #[error("disk image of {len} bytes has no LBA {lba} (block size {block_size})")]
    DiskTooSmall {
        len: usize,
        lba: u64,
        block_size: u32,
    },
    #[error("GPT header at LBA 1: {0}")]
    Header(String),
    #[error("GPT header CRC32 {stored:#010x} does not match the computed {computed:#010x}")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error(
        "GPT partition entry array ({count} × {size} bytes at LBA {lba}) runs past the {len}-byte disk"
    )]
    EntriesOutside {
        lba: u64,
        count: u32,
        size: u32,
        len: usize,
    },
    #[error("GPT partition entry array CRC32 {stored:#010x} does not match the computed {computed:#010x}")]
    EntriesCrc { stored: u32, computed: u32 },
    #[error("UEFI_GPT_DATA")]
    Data(#[from] UefiError),
}

/// A short UEFI_GPT_DATA reads as UefiError's truncation.
impl From<Truncated> for GptError {
    fn from(e: Truncated) -> GptError {
        GptError::Data(e.into())
    }
}

/// The GPT header fields (the 92 bytes every header has).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptHeader {
    pub revision: u32,
    pub header_size: u32,
    pub header_crc32: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub partition_entry_lba: u64,
    pub number_of_partition_entries: u32,
    pub size_of_partition_entry: u32,
    pub partition_entry_array_crc32: u32,
    /// The 92 bytes as read, so the event reproduces them exactly (Reserved included).
    pub raw: [u8; HEADER_SIZE],
}

impl GptHeader {
    pub fn decode(bytes: &[u8]) -> Result<GptHeader, UefiError> {
        let mut r = Reader::new(bytes);
        let raw: [u8; HEADER_SIZE] = r.array("GPT header")?;
        let mut r = Reader::new(&raw);
        let signature: [u8; 8] = r.array("Signature")?;
        if &signature != SIGNATURE {
            return Err(UefiError::Invalid {
                what: "GPT header Signature",
                offset: 0,
                reason: format!("{} (want \"EFI PART\")", hex::encode(signature)),
            });
        }
        let revision = r.u32("Revision")?;
        let header_size = r.u32("HeaderSize")?;
        let header_crc32 = r.u32("HeaderCRC32")?;
        r.u32("Reserved")?;
        Ok(GptHeader {
            revision,
            header_size,
            header_crc32,
            my_lba: r.u64("MyLBA")?,
            alternate_lba: r.u64("AlternateLBA")?,
            first_usable_lba: r.u64("FirstUsableLBA")?,
            last_usable_lba: r.u64("LastUsableLBA")?,
            disk_guid: r.guid("DiskGUID")?,
            partition_entry_lba: r.u64("PartitionEntryLBA")?,
            number_of_partition_entries: r.u32("NumberOfPartitionEntries")?,
            size_of_partition_entry: r.u32("SizeOfPartitionEntry")?,
            partition_entry_array_crc32: r.u32("PartitionEntryArrayCRC32")?,
            raw,
        })
    }
}

/// One used partition entry (raw bytes kept: the event hashes them whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionEntry {
    pub raw: Vec<u8>,
}

impl PartitionEntry {
    fn field<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.raw.get(at..at + N) {
            out.copy_from_slice(src);
        }
        out
    }

    pub fn type_guid(&self) -> Guid {
        Guid(self.field(0))
    }

    pub fn unique_guid(&self) -> Guid {
        Guid(self.field(16))
    }

    pub fn starting_lba(&self) -> u64 {
        u64::from_le_bytes(self.field(32))
    }

    pub fn ending_lba(&self) -> u64 {
        u64::from_le_bytes(self.field(40))
    }
}

/// UEFI_GPT_DATA: the primary header and the used entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptData {
    pub header: GptHeader,
    pub partitions: Vec<PartitionEntry>,
}

/// How many leading bytes of a disk its primary GPT spans, through the end of the partition
/// entry array its header (LBA 1, in `head`) points to: all of the disk that
/// [`GptData::from_disk`] reads. `None` when `head` holds no decodable header; the caller then
/// hands over the whole disk and `from_disk` names the problem.
pub fn primary_gpt_len(head: &[u8], block_size: u32) -> Option<u64> {
    let bs = block_size as usize;
    let header = GptHeader::decode(head.get(bs..bs.checked_mul(2)?)?).ok()?;
    let entries =
        u64::from(header.number_of_partition_entries) * u64::from(header.size_of_partition_entry);
    header
        .partition_entry_lba
        .checked_mul(u64::from(block_size))?
        .checked_add(entries)
}

impl GptData {
    /// Read and validate the primary GPT of a disk image with `block_size`-byte sectors.
    pub fn from_disk(disk: &[u8], block_size: u32) -> Result<GptData, GptError> {
        let bs = block_size as usize;
        let lba1 = disk
            .get(bs..bs.saturating_mul(2))
            .ok_or(GptError::DiskTooSmall {
                len: disk.len(),
                lba: 1,
                block_size,
            })?;
        let header = GptHeader::decode(lba1).map_err(|e| GptError::Header(e.to_string()))?;
        if header.revision != REVISION_1_0 {
            return Err(GptError::Header(format!(
                "Revision {:#010x} (want 0x00010000)",
                header.revision
            )));
        }
        if (header.header_size as usize) < HEADER_SIZE || header.header_size > block_size {
            return Err(GptError::Header(format!(
                "HeaderSize {} is outside {HEADER_SIZE}..={block_size}",
                header.header_size
            )));
        }
        let mut covered = lba1[..header.header_size as usize].to_vec();
        covered[16..20].fill(0);
        let computed = crc32(&covered);
        if computed != header.header_crc32 {
            return Err(GptError::HeaderCrc {
                stored: header.header_crc32,
                computed,
            });
        }
        if header.my_lba != 1 {
            return Err(GptError::Header(format!(
                "MyLBA {} (want 1)",
                header.my_lba
            )));
        }
        let size = header.size_of_partition_entry;
        if header.number_of_partition_entries == 0
            || size < MIN_ENTRY_SIZE
            || !size.is_power_of_two()
        {
            return Err(GptError::Header(format!(
                "{} entries of {size} bytes (want at least one entry of 128·2ⁿ bytes)",
                header.number_of_partition_entries
            )));
        }
        let outside = || GptError::EntriesOutside {
            lba: header.partition_entry_lba,
            count: header.number_of_partition_entries,
            size,
            len: disk.len(),
        };
        let start = header
            .partition_entry_lba
            .checked_mul(u64::from(block_size))
            .ok_or_else(outside)?;
        let len = u64::from(header.number_of_partition_entries) * u64::from(size);
        let end = start.checked_add(len).ok_or_else(outside)?;
        if end > disk.len() as u64 {
            return Err(outside());
        }
        let array = &disk[start as usize..end as usize];
        let computed = crc32(array);
        if computed != header.partition_entry_array_crc32 {
            return Err(GptError::EntriesCrc {
                stored: header.partition_entry_array_crc32,
                computed,
            });
        }
        let partitions = array
            .chunks_exact(size as usize)
            .filter(|e| e[..16] != [0; 16])
            .map(|e| PartitionEntry { raw: e.to_vec() })
            .collect();
        Ok(GptData { header, partitions })
    }

    /// The event data: header (92 bytes) ‖ NumberOfPartitions (u64) ‖ used entries.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.raw.to_vec();
        out.extend_from_slice(&(self.partitions.len() as u64).to_le_bytes());
        for entry in &self.partitions {
            out.extend_from_slice(&entry.raw);
        }
        out
    }

    /// Decode a logged UEFI_GPT_DATA (entry size from the header); trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<GptData, GptError> {
        let header = GptHeader::decode(bytes)?;
        let mut r = Reader::new(bytes);
        r.bytes(HEADER_SIZE, "GPT header")?;
        let count = r.u64("NumberOfPartitions")?;
        let size = header.size_of_partition_entry as usize;
        if size < MIN_ENTRY_SIZE as usize {
            return Err(GptError::Header(format!(
                "SizeOfPartitionEntry {size} is below 128"
            )));
        }
        let need = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(size))
            .filter(|&n| n <= r.remaining())
            .ok_or(UefiError::Truncated {
                what: "partition entries",
                offset: r.pos(),
                need: usize::try_from(count.saturating_mul(size as u64)).unwrap_or(usize::MAX),
                have: r.remaining(),
            })?;
        let partitions = r
            .bytes(need, "partition entries")?
            .chunks_exact(size)
            .map(|e| PartitionEntry { raw: e.to_vec() })
            .collect();
        if r.remaining() != 0 {
            return Err(UefiError::Invalid {
                what: "UEFI_GPT_DATA",
                offset: r.pos(),
                reason: format!("{} bytes after the partition entries", r.remaining()),
            }
            .into());
        }
        Ok(GptData { header, partitions })
    }
}

/// EV_EFI_GPT_EVENT in PCR5, label `gpt`, for the disk firmware boots from.
pub fn gpt_event(disk: &[u8], block_size: u32) -> Result<Event, GptError> {
    let data = GptData::from_disk(disk, block_size)?.encode();
    Ok(Event::hashed_data(5, EventType::EFI_GPT_EVENT, "gpt", data).varies_with(&[Input::Disk]))
}

/// CRC-32 (IEEE 802.3, reflected, as UEFI's CalculateCrc32).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The CRC-32/ISO-HDLC check value from the CRC catalogue.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn the_primary_gpt_spans_through_its_entry_array() {
        // UEFI 2.10 §5.3.2: PartitionEntryLBA at offset 72, NumberOfPartitionEntries at 80,
        // SizeOfPartitionEntry at 84. The usual layout (entries at LBA 2, 128 × 128 bytes) spans
        // 2 × 512 + 16384 bytes.
        let mut head = vec![0u8; 1024];
        head[512..520].copy_from_slice(SIGNATURE);
        head[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        head[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        head[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        assert_eq!(primary_gpt_len(&head, 512), Some(17408));
        // No header, or too little of one: the caller reads the whole disk.
        assert_eq!(primary_gpt_len(&head[..600], 512), None);
        assert_eq!(primary_gpt_len(&[0u8; 1024], 512), None);
        // An entry LBA whose byte offset overflows.
        head[512 + 72..512 + 80].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(primary_gpt_len(&head, 512), None);
    }

    #[test]
    fn decode_never_panics_on_truncation_or_flips() {
        let mut header = [0u8; HEADER_SIZE];
        header[..8].copy_from_slice(SIGNATURE);
        header[84..88].copy_from_slice(&128u32.to_le_bytes());
        let mut data = header.to_vec();
        data.extend_from_slice(&1u64.to_le_bytes());
        data.extend_from_slice(&[0x11; 128]);
        assert_eq!(GptData::decode(&data).unwrap().encode(), data);
        for len in 0..data.len() {
            assert!(GptData::decode(&data[..len]).is_err(), "length {len}");
        }
        for bit in 0..data.len() * 8 {
            let mut flipped = data.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let _ = GptData::decode(&flipped);
            let _ = GptData::from_disk(&flipped, 64);
        }
    }
}
