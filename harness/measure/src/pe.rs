//! PE/COFF parsing and the Authenticode image hash as UEFI firmware measures it.
//!
//! The hash follows edk2 `MeasurePeImageAndExtend` (`SecurityPkg/Tcg/Tcg2Dxe/MeasureBootPeCoff.c`
//! and its TD twin `OvmfPkg/Tcg/TdTcg2Dxe/MeasureBootPeCoff.c`), which is the PE/COFF spec's
//! Authenticode procedure with firmware's exact edge cases:
//! - the optional header is PE32 if its Magic is 0x10b and PE32+ otherwise;
//! - headers are hashed up to SizeOfHeaders, skipping CheckSum and, when NumberOfRvaAndSizes > 4,
//!   the certificate-table data directory entry;
//! - sections with SizeOfRawData > 0 follow, stably sorted by PointerToRawData;
//! - then, if the file is longer than SizeOfHeaders + ΣSizeOfRawData, the bytes from that sum up
//!   to the file's end minus the certificate table's size; a file shorter than that sum plus
//!   the certificate size is rejected.
//!
//! Hand-written rather than `object`/`goblin`/`pelite`: those validate images by their own rules
//! (rejecting or normalising inputs firmware hashes as-is, e.g. a non-standard Magic or sections
//! overlapping headers), and the hash depends on raw field offsets they do not expose. Firmware's
//! rules are what we must match, and they fit in a few checked reads.
//!
//! The embedded signature is read with a minimal DER walk down to SpcIndirectDataContent's
//! DigestInfo; no certificate is parsed or verified.

use crate::event::{Digests, Event, EventType};
use crate::reader::{Reader, Truncated};
use sha2::{Digest, Sha256, Sha384};
use std::ops::Range;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PeError {
    #[error("{what} at offset {offset:#x}: need {need} bytes, file has {len}")]
    Truncated {
        what: &'static str,
        offset: u64,
        need: u64,
        len: usize,
    },
    #[error("{what} at offset {offset:#x}: {reason}")]
    Invalid {
        what: &'static str,
        offset: u64,
        reason: String,
    },
}

fn invalid(what: &'static str, offset: u64, reason: impl Into<String>) -> PeError {
    PeError::Invalid {
        what,
        offset,
        reason: reason.into(),
    }
}

/// A reader at the file offset `offset` (PE fields hold them as u32 and sums of them), whose
/// short reads are PeError's own truncation, with the file's length.
fn reader_at(bytes: &[u8], offset: u64) -> (Reader<'_>, impl Fn(Truncated) -> PeError) {
    let len = bytes.len();
    let truncated = move |e: Truncated| PeError::Truncated {
        what: e.field,
        offset: e.offset as u64,
        need: e.needed as u64,
        len,
    };
    // An offset past what usize holds is past the end all the same.
    let at = usize::try_from(offset).unwrap_or(usize::MAX);
    (Reader::at(bytes, at), truncated)
}

/// `bytes[offset..offset+len]`, or an error naming the field.
fn slice<'a>(
    bytes: &'a [u8],
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<&'a [u8], PeError> {
    let (mut r, truncated) = reader_at(bytes, offset);
    r.bytes(usize::try_from(len).unwrap_or(usize::MAX), what)
        .map_err(truncated)
}

fn u16_at(bytes: &[u8], offset: u64, what: &'static str) -> Result<u16, PeError> {
    let (mut r, truncated) = reader_at(bytes, offset);
    r.u16(what).map_err(truncated)
}

fn u32_at(bytes: &[u8], offset: u64, what: &'static str) -> Result<u32, PeError> {
    let (mut r, truncated) = reader_at(bytes, offset);
    r.u32(what).map_err(truncated)
}

pub const MAGIC_PE32: u16 = 0x10b;
pub const MAGIC_PE32_PLUS: u16 = 0x20b;
const DIRECTORY_SECURITY: u32 = 4;
const SECTION_HEADER_SIZE: u64 = 40;

/// A section header's fields that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The 8-byte name up to its first NUL, lossily decoded.
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

/// An IMAGE_DATA_DIRECTORY entry. For the certificate table, `address` is a file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataDirectory {
    pub address: u32,
    pub size: u32,
}

/// A parsed PE/COFF image borrowing the file's bytes.
#[derive(Clone, Debug)]
pub struct PeImage<'a> {
    bytes: &'a [u8],
    pub machine: u16,
    pub magic: u16,
    pub size_of_headers: u32,
    pub number_of_rva_and_sizes: u32,
    /// File offset of the optional header's CheckSum field.
    pub checksum_offset: u64,
    /// File offset of the certificate-table directory entry, when NumberOfRvaAndSizes > 4.
    pub security_entry_offset: Option<u64>,
    pub certificate_table: Option<DataDirectory>,
    pub sections: Vec<Section>,
}

impl<'a> PeImage<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<PeImage<'a>, PeError> {
        // edk2 accepts an image without a DOS header: the PE signature is then at 0.
        let pe_offset = if bytes.starts_with(b"MZ") {
            u64::from(u32_at(bytes, 0x3c, "e_lfanew")?)
        } else {
            0
        };
        let signature = slice(bytes, pe_offset, 4, "PE signature")?;
        if signature != b"PE\0\0" {
            return Err(invalid(
                "PE signature",
                pe_offset,
                format!("found {} (want 50450000)", hex::encode(signature)),
            ));
        }
        let coff = pe_offset + 4;
        let machine = u16_at(bytes, coff, "Machine")?;
        let number_of_sections = u16_at(bytes, coff + 2, "NumberOfSections")?;
        let size_of_optional_header = u16_at(bytes, coff + 16, "SizeOfOptionalHeader")?;
        let optional = coff + 20;
        let optional_end = optional + u64::from(size_of_optional_header);
        let magic = u16_at(bytes, optional, "optional header Magic")?;
        let (rva_count_at, directories_at) = if magic == MAGIC_PE32 {
            (optional + 92, optional + 96)
        } else {
            (optional + 108, optional + 112)
        };
        let size_of_headers = u32_at(bytes, optional + 60, "SizeOfHeaders")?;
        let checksum_offset = optional + 64;
        let number_of_rva_and_sizes = u32_at(bytes, rva_count_at, "NumberOfRvaAndSizes")?;
        if rva_count_at + 4 > optional_end {
            return Err(invalid(
                "SizeOfOptionalHeader",
                coff + 16,
                format!("{size_of_optional_header} is too small for magic {magic:#x}"),
            ));
        }
        let headers_end = u64::from(size_of_headers);
        if headers_end > bytes.len() as u64 {
            return Err(PeError::Truncated {
                what: "headers (SizeOfHeaders)",
                offset: 0,
                need: headers_end,
                len: bytes.len(),
            });
        }
        let (security_entry_offset, certificate_table) =
            if number_of_rva_and_sizes > DIRECTORY_SECURITY {
                let entry = directories_at + 8 * u64::from(DIRECTORY_SECURITY);
                if entry + 8 > optional_end || entry + 8 > headers_end {
                    return Err(invalid(
                        "certificate table directory entry",
                        entry,
                        "outside the optional header or SizeOfHeaders",
                    ));
                }
                let address = u32_at(bytes, entry, "certificate table address")?;
                let size = u32_at(bytes, entry + 4, "certificate table size")?;
                let table = (size != 0).then_some(DataDirectory { address, size });
                (Some(entry), table)
            } else {
                (None, None)
            };
        if checksum_offset + 4 > headers_end {
            return Err(invalid(
                "SizeOfHeaders",
                optional + 60,
                format!("{size_of_headers} ends before the CheckSum field"),
            ));
        }
        let mut sections = Vec::with_capacity(number_of_sections as usize);
        for index in 0..u64::from(number_of_sections) {
            let at = optional_end + index * SECTION_HEADER_SIZE;
            slice(bytes, at, SECTION_HEADER_SIZE, "section header")?;
            // IMAGE_SECTION_HEADER (PE/COFF specification, "Section Table").
            let (mut r, truncated) = reader_at(bytes, at);
            let name_bytes: [u8; 8] = r.array("section Name").map_err(&truncated)?;
            let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(8);
            let virtual_size = r.u32("section VirtualSize").map_err(&truncated)?;
            let virtual_address = r.u32("section VirtualAddress").map_err(&truncated)?;
            let size_of_raw_data = r.u32("section SizeOfRawData").map_err(&truncated)?;
            let pointer_to_raw_data = r.u32("section PointerToRawData").map_err(&truncated)?;
            r.bytes(12, "section relocation and line-number fields")
                .map_err(&truncated)?;
            let section = Section {
                name: String::from_utf8_lossy(&name_bytes[..name_len]).into_owned(),
                virtual_size,
                virtual_address,
                size_of_raw_data,
                pointer_to_raw_data,
                characteristics: r.u32("section Characteristics").map_err(&truncated)?,
            };
            if section.size_of_raw_data != 0 {
                slice(
                    bytes,
                    u64::from(section.pointer_to_raw_data),
                    u64::from(section.size_of_raw_data),
                    "section raw data",
                )?;
            }
            sections.push(section);
        }
        Ok(PeImage {
            bytes,
            machine,
            magic,
            size_of_headers,
            number_of_rva_and_sizes,
            checksum_offset,
            security_entry_offset,
            certificate_table,
            sections,
        })
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The file ranges the Authenticode hash covers, in hashing order.
    pub fn authenticode_ranges(&self) -> Result<Vec<Range<usize>>, PeError> {
        let headers_end = self.size_of_headers as usize;
        let checksum = self.checksum_offset as usize;
        let mut ranges = Vec::with_capacity(self.sections.len() + 4);
        ranges.push(0..checksum);
        match self.security_entry_offset {
            Some(entry) => {
                let entry = entry as usize;
                ranges.push(checksum + 4..entry);
                ranges.push(entry + 8..headers_end);
            }
            None => ranges.push(checksum + 4..headers_end),
        }
        // A stable sort keeps header order among equal offsets, as edk2's insertion sort does.
        let mut sorted: Vec<&Section> = self.sections.iter().collect();
        sorted.sort_by_key(|s| s.pointer_to_raw_data);
        let mut hashed = self.size_of_headers as u64;
        for section in sorted.into_iter().filter(|s| s.size_of_raw_data != 0) {
            let start = section.pointer_to_raw_data as usize;
            ranges.push(start..start + section.size_of_raw_data as usize);
            hashed += u64::from(section.size_of_raw_data);
        }
        let len = self.bytes.len() as u64;
        if len > hashed {
            let cert = if self.security_entry_offset.is_some() {
                self.certificate_table.map_or(0, |t| u64::from(t.size))
            } else {
                0
            };
            if len > hashed + cert {
                ranges.push(hashed as usize..(len - cert) as usize);
            } else if len < hashed + cert {
                return Err(invalid(
                    "certificate table size",
                    self.security_entry_offset.unwrap_or(0) + 4,
                    format!(
                        "{cert} bytes do not fit after the {hashed} hashed bytes of a {len}-byte file"
                    ),
                ));
            }
        }
        ranges.retain(|r| !r.is_empty());
        Ok(ranges)
    }

    /// Authenticode digests in both banks, in one pass over the hashed ranges.
    pub fn authenticode(&self) -> Result<Digests, PeError> {
        let ranges = self.authenticode_ranges()?;
        let mut sha256 = Sha256::new();
        let mut sha384 = Sha384::new();
        // The two hashes run on two threads: together they cost as much as SHA-384 alone.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for r in &ranges {
                    sha256.update(&self.bytes[r.clone()]);
                }
            });
            for r in &ranges {
                sha384.update(&self.bytes[r.clone()]);
            }
        });
        Ok(Digests {
            sha256: Some(sha256.finalize().into()),
            sha384: Some(sha384.finalize().into()),
        })
    }

    /// The WIN_CERTIFICATE entries of the certificate table.
    pub fn certificates(&self) -> Result<Vec<WinCertificate<'a>>, PeError> {
        let Some(table) = self.certificate_table else {
            return Ok(Vec::new());
        };
        let start = u64::from(table.address);
        let data = slice(
            self.bytes,
            start,
            u64::from(table.size),
            "certificate table",
        )?;
        let mut out = Vec::new();
        let mut pos: u64 = 0;
        while pos + 8 <= data.len() as u64 {
            let length = u32_at(data, pos, "WIN_CERTIFICATE dwLength")?;
            let revision = u16_at(data, pos + 4, "WIN_CERTIFICATE wRevision")?;
            let certificate_type = u16_at(data, pos + 6, "WIN_CERTIFICATE wCertificateType")?;
            if length < 8 {
                return Err(invalid(
                    "WIN_CERTIFICATE dwLength",
                    start + pos,
                    format!("{length} is below the 8-byte header"),
                ));
            }
            let content =
                slice(data, pos + 8, u64::from(length) - 8, "WIN_CERTIFICATE").map_err(|_| {
                    invalid(
                        "WIN_CERTIFICATE dwLength",
                        start + pos,
                        format!("{length} runs past the certificate table"),
                    )
                })?;
            out.push(WinCertificate {
                revision,
                certificate_type,
                content,
            });
            // Entries are 8-byte aligned.
            pos += (u64::from(length) + 7) & !7;
        }
        Ok(out)
    }

    /// The digests the embedded Authenticode signatures sign (SpcIndirectDataContent).
    pub fn signed_digests(&self) -> Result<Vec<SignedDigest>, PeError> {
        self.certificates()?
            .iter()
            .filter(|c| c.certificate_type == WIN_CERT_TYPE_PKCS_SIGNED_DATA)
            .map(|c| spc_indirect_digest(c.content))
            .collect()
    }
}

/// Authenticode SHA-256 and SHA-384 of a PE image held in memory (e.g. a kernel after QEMU
/// patched its setup header).
pub fn authenticode(bytes: &[u8]) -> Result<Digests, PeError> {
    PeImage::parse(bytes)?.authenticode()
}

pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WinCertificate<'a> {
    pub revision: u16,
    pub certificate_type: u16,
    /// bCertificate: for PKCS_SIGNED_DATA a DER ContentInfo.
    pub content: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha1 => "sha1",
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha384 => "sha384",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }
}

/// The image digest an Authenticode signature signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedDigest {
    pub algorithm: DigestAlgorithm,
    pub digest: Vec<u8>,
}

impl SignedDigest {
    /// Whether this digest equals the image's own Authenticode digest in its algorithm; `None`
    /// when mrlab does not compute that algorithm.
    pub fn matches(&self, digests: &Digests) -> Option<bool> {
        match self.algorithm {
            DigestAlgorithm::Sha256 => digests.sha256.map(|d| d[..] == self.digest[..]),
            DigestAlgorithm::Sha384 => digests.sha384.map(|d| d[..] == self.digest[..]),
            _ => None,
        }
    }
}

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_SPC_INDIRECT_DATA: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x04];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_CONTEXT_0: u8 = 0xa0;

/// A DER cursor; offsets in errors are relative to the signature's start.
struct Der<'a> {
    bytes: &'a [u8],
    base: usize,
    pos: usize,
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Der<'a> {
        Der {
            bytes,
            base,
            pos: 0,
        }
    }

    fn err(&self, reason: String) -> PeError {
        invalid(
            "Authenticode signature (DER)",
            (self.base + self.pos) as u64,
            reason,
        )
    }

    /// The next element, which must carry `tag`; returns a cursor over its content.
    fn expect(&mut self, tag: u8, what: &str) -> Result<Der<'a>, PeError> {
        let rest = &self.bytes[self.pos..];
        let (&found, after_tag) = rest
            .split_first()
            .ok_or_else(|| self.err(format!("{what}: end of data")))?;
        if found != tag {
            return Err(self.err(format!("{what}: tag {found:#04x} (want {tag:#04x})")));
        }
        let (&first, after_len) = after_tag
            .split_first()
            .ok_or_else(|| self.err(format!("{what}: no length")))?;
        let (len, header) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 || count > 4 {
                return Err(self.err(format!("{what}: unsupported length form {first:#04x}")));
            }
            let len_bytes = after_len
                .get(..count)
                .ok_or_else(|| self.err(format!("{what}: truncated length")))?;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | b as usize);
            (len, 2 + count)
        };
        let content = rest
            .get(header..)
            .and_then(|r| r.get(..len))
            .ok_or_else(|| self.err(format!("{what}: {len} content bytes run past the end")))?;
        let child = Der::new(content, self.base + self.pos + header);
        self.pos += header + len;
        Ok(child)
    }

    fn skip(&mut self, tag: u8, what: &str) -> Result<(), PeError> {
        self.expect(tag, what).map(|_| ())
    }

    fn content(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Walk ContentInfo → SignedData → contentInfo (SpcIndirectDataContent) → DigestInfo.
fn spc_indirect_digest(der: &[u8]) -> Result<SignedDigest, PeError> {
    let mut top = Der::new(der, 0);
    let mut content_info = top.expect(TAG_SEQUENCE, "ContentInfo")?;
    let oid = content_info.expect(TAG_OID, "ContentInfo contentType")?;
    if oid.content() != OID_SIGNED_DATA {
        return Err(oid.err("ContentInfo contentType is not signedData".to_string()));
    }
    let mut explicit = content_info.expect(TAG_CONTEXT_0, "ContentInfo content")?;
    let mut signed_data = explicit.expect(TAG_SEQUENCE, "SignedData")?;
    signed_data.skip(TAG_INTEGER, "SignedData version")?;
    signed_data.skip(TAG_SET, "SignedData digestAlgorithms")?;
    let mut encap = signed_data.expect(TAG_SEQUENCE, "SignedData contentInfo")?;
    let oid = encap.expect(TAG_OID, "contentInfo contentType")?;
    if oid.content() != OID_SPC_INDIRECT_DATA {
        return Err(oid.err("contentInfo contentType is not SpcIndirectDataContent".to_string()));
    }
    let mut explicit = encap.expect(TAG_CONTEXT_0, "contentInfo content")?;
    let mut indirect = explicit.expect(TAG_SEQUENCE, "SpcIndirectDataContent")?;
    indirect.skip(TAG_SEQUENCE, "SpcIndirectDataContent data")?;
    let mut digest_info = indirect.expect(TAG_SEQUENCE, "DigestInfo")?;
    let mut algorithm_id = digest_info.expect(TAG_SEQUENCE, "DigestInfo digestAlgorithm")?;
    let oid = algorithm_id.expect(TAG_OID, "digestAlgorithm algorithm")?;
    let (algorithm, size) = match oid.content() {
        o if o == OID_SHA1 => (DigestAlgorithm::Sha1, 20),
        o if o == OID_SHA256 => (DigestAlgorithm::Sha256, 32),
        o if o == OID_SHA384 => (DigestAlgorithm::Sha384, 48),
        o if o == OID_SHA512 => (DigestAlgorithm::Sha512, 64),
        other => {
            return Err(oid.err(format!(
                "unknown digest algorithm OID {}",
                hex::encode(other)
            )))
        }
    };
    let digest = digest_info.expect(TAG_OCTET_STRING, "DigestInfo digest")?;
    if digest.content().len() != size {
        return Err(digest.err(format!(
            "{} digest is {} bytes (want {size})",
            algorithm.name(),
            digest.content().len()
        )));
    }
    Ok(SignedDigest {
        algorithm,
        digest: digest.content().to_vec(),
    })
}

/// UEFI_IMAGE_LOAD_EVENT (TCG PC Client PFP): where firmware loaded the image, and its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLoadEvent {
    pub image_location_in_memory: u64,
    pub image_length_in_memory: u64,
    pub image_link_time_address: u64,
    /// The encoded device path (see [`crate::devpath::DevicePath::encode`]).
    pub device_path: Vec<u8>,
}

impl ImageLoadEvent {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.device_path.len());
        out.extend_from_slice(&self.image_location_in_memory.to_le_bytes());
        out.extend_from_slice(&self.image_length_in_memory.to_le_bytes());
        out.extend_from_slice(&self.image_link_time_address.to_le_bytes());
        out.extend_from_slice(&(self.device_path.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.device_path);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ImageLoadEvent, crate::uefi::UefiError> {
        let mut r = crate::reader::Reader::new(bytes);
        let image_location_in_memory = r.u64("ImageLocationInMemory")?;
        let image_length_in_memory = r.u64("ImageLengthInMemory")?;
        let image_link_time_address = r.u64("ImageLinkTimeAddress")?;
        let path_len = r.u64("LengthOfDevicePath")?;
        let path_len = usize::try_from(path_len).unwrap_or(usize::MAX);
        let device_path = r.bytes(path_len, "DevicePath")?.to_vec();
        if r.remaining() != 0 {
            return Err(crate::uefi::UefiError::Invalid {
                what: "UEFI_IMAGE_LOAD_EVENT",
                offset: r.pos(),
                reason: format!("{} bytes after DevicePath", r.remaining()),
            });
        }
        Ok(ImageLoadEvent {
            image_location_in_memory,
            image_length_in_memory,
            image_link_time_address,
            device_path,
        })
    }
}

/// EV_EFI_BOOT_SERVICES_APPLICATION in PCR4, label `pe:<name>`: the digest is the image's
/// Authenticode hash; the data is the UEFI_IMAGE_LOAD_EVENT when the load address is known.
/// The caller adds `varies_with` (what produced the image: kernel, memory for a patched header…).
pub fn boot_services_application(
    name: &str,
    image: &[u8],
    load: Option<&ImageLoadEvent>,
) -> Result<Event, PeError> {
    Ok(Event {
        pcr: 4,
        event_type: EventType::EFI_BOOT_SERVICES_APPLICATION,
        digests: authenticode(image)?,
        data: load.map(ImageLoadEvent::encode),
        label: format!("pe:{name}"),
        varies_with: Vec::new(),
        platforms: crate::event::Platforms::BOTH,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ image: DOS stub, headers in 0x200 bytes, one section, trailing bytes and
    /// a certificate table holding `cert`.
    pub(crate) fn tiny_pe(cert: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x400];
        f[..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        f[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        f[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        f[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        f[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        f[opt..opt + 2].copy_from_slice(&MAGIC_PE32_PLUS.to_le_bytes());
        f[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        f[opt + 64..opt + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        f[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let sec = opt + 240;
        f[sec..sec + 5].copy_from_slice(b".text");
        f[sec + 16..sec + 20].copy_from_slice(&0x100u32.to_le_bytes());
        f[sec + 20..sec + 24].copy_from_slice(&0x200u32.to_le_bytes());
        for (i, b) in f[0x200..0x300].iter_mut().enumerate() {
            *b = i as u8;
        }
        f[0x300..0x400].fill(0xab);
        let mut wc = ((cert.len() + 8) as u32).to_le_bytes().to_vec();
        wc.extend_from_slice(&0x0200u16.to_le_bytes());
        wc.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
        wc.extend_from_slice(cert);
        while !wc.len().is_multiple_of(8) {
            wc.push(0);
        }
        let dir = opt + 112 + 32;
        f[dir..dir + 4].copy_from_slice(&0x400u32.to_le_bytes());
        f[dir + 4..dir + 8].copy_from_slice(&(wc.len() as u32).to_le_bytes());
        f.extend_from_slice(&wc);
        f
    }

    #[test]
    fn hash_skips_checksum_directory_entry_and_certificates() {
        let file = tiny_pe(&[0x30, 0x00]);
        let image = PeImage::parse(&file).unwrap();
        // Independent oracle: the spec's procedure written out on the known layout.
        let opt = 0x84 + 20;
        let mut expect = Vec::new();
        expect.extend_from_slice(&file[..opt + 64]);
        expect.extend_from_slice(&file[opt + 68..opt + 144]);
        expect.extend_from_slice(&file[opt + 152..0x200]);
        expect.extend_from_slice(&file[0x200..0x300]);
        expect.extend_from_slice(&file[0x300..0x400]);
        assert_eq!(image.authenticode().unwrap(), Digests::of(&expect));
        // The checksum and the certificate table do not change the hash.
        let mut patched = file.clone();
        patched[opt + 64] ^= 0xff;
        let last = patched.len() - 1;
        patched[last] ^= 0xff;
        assert_eq!(authenticode(&patched).unwrap(), Digests::of(&expect));
    }

    #[test]
    fn truncation_and_bit_flips_never_panic() {
        let file = tiny_pe(&[0x30, 0x03, 0x02, 0x01, 0x00]);
        for len in 0..file.len() {
            let result = PeImage::parse(&file[..len]).and_then(|p| {
                p.authenticode_ranges()?;
                p.signed_digests()
            });
            assert!(result.is_err(), "length {len} parsed");
        }
        for bit in 0..file.len() * 8 {
            let mut flipped = file.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            if let Ok(image) = PeImage::parse(&flipped) {
                let _ = image.authenticode_ranges();
                let _ = image.signed_digests();
            }
        }
    }

    #[test]
    fn image_load_event_round_trips_and_rejects_truncation() {
        let event = ImageLoadEvent {
            image_location_in_memory: 0x7b0d_4018,
            image_length_in_memory: 0x7d_d400,
            image_link_time_address: 0,
            device_path: vec![0x7f, 0xff, 4, 0],
        };
        let bytes = event.encode();
        assert_eq!(ImageLoadEvent::decode(&bytes).unwrap(), event);
        for len in 0..bytes.len() {
            assert!(ImageLoadEvent::decode(&bytes[..len]).is_err());
        }
    }
}
