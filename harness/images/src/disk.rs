//! Bootable UEFI disks: a GPT with one EFI System Partition holding FAT32 with systemd-boot as
//! the removable-media loader (`/EFI/BOOT/BOOTX64.EFI`) and UKIs in `/EFI/Linux/` (found by
//! systemd-boot's Boot Loader Specification type #2 scan).
//!
//! Determinism: fixed disk and partition GUIDs, a fixed FAT volume id and label, every FAT
//! timestamp 1980-01-01 00:00:00 (a constant time provider), files added in a fixed order. The
//! GPT is written here (UEFI 2.10 §5.3: protective MBR, primary header and entry array at LBA 1
//! and 2, backups at the end) because its bytes are measured (EV_EFI_GPT_EVENT) and must be
//! exactly what we decide.

use crate::{Cache, Error};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
/// The ESP starts at 1 MiB, as partitioning tools align it.
const ESP_FIRST_LBA: u64 = 2048;
/// FAT32 needs at least 65525 clusters: 128 MiB of 512-byte clusters is 262144.
pub const ESP_SIZE: u64 = 128 << 20;
const ESP_CLUSTER: u32 = 512;
/// 128 entries of 128 bytes: 32 sectors.
const GPT_ENTRIES: u32 = 128;
const GPT_ENTRY_SIZE: u32 = 128;
const GPT_ENTRY_SECTORS: u64 = (GPT_ENTRIES * GPT_ENTRY_SIZE) as u64 / SECTOR;

/// `EFI System Partition` type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
const ESP_TYPE_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Fixed identities of every harness disk (arbitrary, constant).
pub const DISK_GUID: &str = "6d726c61-6200-4469-736b-000000000001";
pub const ESP_PARTITION_GUID: &str = "6d726c61-6200-4573-7000-000000000001";
pub const ESP_VOLUME_ID: u32 = 0x4d52_4c42;
const ESP_LABEL: &[u8; 11] = b"MRLAB-ESP  ";
const ESP_NAME: &str = "EFI System Partition";

/// Bumped whenever the disk layout changes.
const DISK_FORMAT: &str = "mrlab-disk-v1";

/// What goes on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// systemd-boot package id providing `systemd-bootx64.efi`, e.g. `systemd-boot-257`.
    pub bootloader_id: String,
    /// UKIs as (file name without `.efi`, path): each lands in `/EFI/Linux/<name>.efi`.
    pub ukis: Vec<(String, PathBuf)>,
    /// `/loader/loader.conf` contents, if any (e.g. `"timeout 0\n"`).
    pub loader_conf: Option<String>,
}

/// The 16 on-disk bytes of a GUID in its text form (first three fields little-endian).
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// A FAT time provider that always answers the DOS epoch, 1980-01-01 00:00:00.
#[derive(Debug)]
struct DosEpoch;

impl fatfs::TimeProvider for DosEpoch {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static DOS_EPOCH: DosEpoch = DosEpoch;

/// The FAT32 file system image of the ESP with `files` (path, bytes), in order.
fn fat_image(files: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut image = Cursor::new(vec![0u8; ESP_SIZE as usize]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(ESP_CLUSTER)
            .volume_id(ESP_VOLUME_ID)
            .volume_label(*ESP_LABEL),
    )?;
    image.seek(SeekFrom::Start(0))?;
    {
        let fs = fatfs::FileSystem::new(
            &mut image,
            fatfs::FsOptions::new()
                .update_accessed_date(false)
                .time_provider(&DOS_EPOCH),
        )?;
        for (path, data) in files {
            let parts: Vec<&str> = path.split('/').collect();
            let mut dir = fs.root_dir();
            for part in &parts[..parts.len() - 1] {
                dir = match dir.open_dir(part) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(part)?,
                };
            }
            let mut file = dir.create_file(parts[parts.len() - 1])?;
            file.truncate()?;
            file.write_all(data)?;
            file.flush()?;
        }
        fs.unmount()?;
    }
    Ok(image.into_inner())
}

fn gpt_entry_array(esp_last_lba: u64) -> Vec<u8> {
    let mut entries = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
    let e = &mut entries[..GPT_ENTRY_SIZE as usize];
    e[0..16].copy_from_slice(&guid_bytes(ESP_TYPE_GUID));
    e[16..32].copy_from_slice(&guid_bytes(ESP_PARTITION_GUID));
    e[32..40].copy_from_slice(&ESP_FIRST_LBA.to_le_bytes());
    e[40..48].copy_from_slice(&esp_last_lba.to_le_bytes());
    // Attributes (48..56) stay 0.
    for (i, unit) in ESP_NAME.encode_utf16().enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    entries
}

fn gpt_header(
    my_lba: u64,
    alternate_lba: u64,
    entries_lba: u64,
    last_lba: u64,
    entries_crc: u32,
) -> Vec<u8> {
    let mut h = vec![0u8; SECTOR as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    // 16..20 header CRC, filled below; 20..24 reserved.
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
    h[40..48].copy_from_slice(&(2 + GPT_ENTRY_SECTORS).to_le_bytes());
    h[48..56].copy_from_slice(&(last_lba - 1 - GPT_ENTRY_SECTORS).to_le_bytes());
    h[56..72].copy_from_slice(&guid_bytes(DISK_GUID));
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&GPT_ENTRIES.to_le_bytes());
    h[84..88].copy_from_slice(&GPT_ENTRY_SIZE.to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn protective_mbr(total_lbas: u64) -> Vec<u8> {
    let mut m = vec![0u8; SECTOR as usize];
    let p = &mut m[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // starting CHS
    p[4] = 0xee;
    p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]); // ending CHS
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(total_lbas - 1).unwrap_or(u32::MAX);
    p[12..16].copy_from_slice(&size.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// Writes `data` at `offset` of `file`, skipping all-zero 4 KiB blocks so the image stays sparse.
fn write_sparse(file: &mut fs::File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    for (i, block) in data.chunks(4096).enumerate() {
        if block.iter().any(|&b| b != 0) {
            file.seek(SeekFrom::Start(offset + (i * 4096) as u64))?;
            file.write_all(block)?;
        }
    }
    Ok(())
}

fn write_disk(path: &Path, fat: &[u8]) -> std::io::Result<()> {
    let esp_last_lba = ESP_FIRST_LBA + ESP_SIZE / SECTOR - 1;
    // 1 MiB after the ESP; the backup GPT occupies its last 33 sectors.
    let total_lbas = esp_last_lba + 1 + 2048;
    let last_lba = total_lbas - 1;
    let entries = gpt_entry_array(esp_last_lba);
    let entries_crc = crc32fast::hash(&entries);
    let backup_entries_lba = last_lba - GPT_ENTRY_SECTORS;

    let mut file = fs::File::create(path)?;
    file.set_len(total_lbas * SECTOR)?;
    write_sparse(&mut file, 0, &protective_mbr(total_lbas))?;
    write_sparse(
        &mut file,
        SECTOR,
        &gpt_header(1, last_lba, 2, last_lba, entries_crc),
    )?;
    write_sparse(&mut file, 2 * SECTOR, &entries)?;
    write_sparse(&mut file, ESP_FIRST_LBA * SECTOR, fat)?;
    write_sparse(&mut file, backup_entries_lba * SECTOR, &entries)?;
    write_sparse(
        &mut file,
        last_lba * SECTOR,
        &gpt_header(last_lba, 1, backup_entries_lba, last_lba, entries_crc),
    )?;
    file.sync_all()
}

impl Cache {
    /// The `systemd-bootx64.efi` of systemd-boot package `bootloader_id`.
    pub fn systemd_boot(&self, bootloader_id: &str) -> Result<PathBuf, Error> {
        let path = self
            .package(bootloader_id)?
            .join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
        if !path.is_file() {
            return Err(Error::Package {
                id: bootloader_id.to_owned(),
                what: format!("{} missing", path.display()),
            });
        }
        Ok(path)
    }

    /// Builds (or finds) the raw GPT disk for `spec` under `<root>/images/disk-<key>/disk.raw`
    /// (sparse, 130 MiB), keyed by the bootloader package, the UKI names and bytes and the
    /// loader.conf.
    pub fn esp_disk(&self, spec: &DiskSpec) -> Result<PathBuf, Error> {
        let bootloader = self.systemd_boot(&spec.bootloader_id)?;
        let read = |p: &Path| fs::read(p).map_err(|e| Error::Io(p.to_owned(), e));
        let mut files = vec![("EFI/BOOT/BOOTX64.EFI".to_owned(), read(&bootloader)?)];
        for (name, path) in &spec.ukis {
            if name.is_empty() || name.contains(['/', '\\']) {
                return Err(Error::Package {
                    id: spec.bootloader_id.clone(),
                    what: format!("UKI name {name:?} must be a plain file name"),
                });
            }
            files.push((format!("EFI/Linux/{name}.efi"), read(path)?));
        }
        if let Some(conf) = &spec.loader_conf {
            files.push(("loader/loader.conf".to_owned(), conf.clone().into_bytes()));
        }

        let bootloader_sha256 = self.locked(&spec.bootloader_id)?.sha256.clone();
        self.esp_disk_of(bootloader_sha256.as_bytes(), &files)
    }

    /// Builds (or finds) the raw GPT disk whose ESP holds `files` (path, bytes), in order, under
    /// `<root>/images/disk-<key>/disk.raw`, keyed by `tag`, each path and each file's sha256.
    pub(crate) fn esp_disk_of(
        &self,
        tag: &[u8],
        files: &[(String, Vec<u8>)],
    ) -> Result<PathBuf, Error> {
        let mut key = Sha256::new();
        key.update(DISK_FORMAT);
        key.update(tag);
        for (path, data) in files {
            key.update((path.len() as u64).to_le_bytes());
            key.update(path);
            key.update(Sha256::digest(data));
        }
        let key = hex::encode(key.finalize());
        let dir = self
            .root
            .join("images")
            .join(format!("disk-{}", &key[..16]));
        let out = dir.join("disk.raw");
        if out.is_file() {
            return Ok(out);
        }
        fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
        let fat = fat_image(files).map_err(|e| Error::Io(dir.join("(FAT image)"), e))?;
        let tmp = crate::temp_sibling(&out);
        write_disk(&tmp, &fat).map_err(|e| Error::Io(tmp.clone(), e))?;
        fs::rename(&tmp, &out).map_err(|e| Error::Io(out.clone(), e))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_type_guid_on_disk_bytes() {
        // UEFI spec: the ESP type GUID is stored as 28 73 2A C1 1F F8 D2 11 BA 4B 00 A0 C9 3E C9 3B.
        assert_eq!(
            guid_bytes(ESP_TYPE_GUID),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
    }
}
