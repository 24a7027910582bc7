//! What systemd-boot and systemd-stub measure when OVMF boots a UKI from an ESP, and the bytes
//! they hand on (the kernel image, its command line, the initrd).
//!
//! Facts, from systemd `src/boot/` (boot.c, stub.c, measure.c, cpio.c, uki.c) and checked against
//! real vTPM boots of Debian's systemd-boot 252 and 257 (see `tests/data/uki-vtpm/README.md`):
//! - systemd-boot (257) measures `loader/loader.conf` as EV_EVENT_TAG into PCR5 (tag
//!   0xf5bc582a, description `loader.conf` in UTF-16 with its NUL), digest over the file.
//! - systemd-boot (252) passes a UKI's `.cmdline` as LoadOptions and measures it into PCR12 as
//!   EV_IPL: data and digest are the UTF-16 command line with its NUL.
//! - systemd-stub measures each UKI section of its list present in the image into PCR11 as two
//!   EV_IPL events, both logged with the section name in UTF-16 (with NUL): the first hashes
//!   the ASCII name with its NUL, the second the section's bytes as loaded (VirtualSize bytes,
//!   zero-filled past SizeOfRawData).
//! - systemd-stub measures LoadOptions it was given (PCR12, same form as systemd-boot's).
//! - systemd-stub starts the `.linux` section with LoadImage (so firmware measures its
//!   Authenticode into PCR4) and LoadOptions = the command line in UTF-16 with NUL, and serves
//!   the initrd through LINUX_EFI_INITRD_MEDIA: `.ucode`, `.initrd` and (257) a
//!   `/.extra/os-release` cpio of `.osrel`, each padded to 4 bytes when there is more than one.
//!
//! Labels: `pe:systemd-boot`, `pe:uki`, `systemd-boot:loader.conf`, `systemd-boot:cmdline`,
//! `systemd-boot:smbios:type1` (`type2`, `type11`),
//! `uki:<section>:name` and `uki:<section>` (e.g. `uki:.cmdline`), `stub:cmdline`.

use crate::event::{Event, EventType, Input};
use crate::pe::{PeError, PeImage, Section};
use crate::quirks::Quirks;
use crate::uefi::utf16le;
use std::borrow::Cow;

/// systemd `src/boot/measure.h` LOADER_CONF_EVENT_TAG_ID.
pub const LOADER_CONF_EVENT_TAG: u32 = 0xf5bc_582a;
/// systemd docs/TPM2_PCR_MEASUREMENTS.md: the event tags of the SMBIOS structures systemd-boot
/// (or the stub, whichever runs first) measures into PCR1, by SMBIOS type.
pub const SMBIOS_EVENT_TAGS: [(u8, u32); 3] =
    [(1, 0xd5cb_7cbc), (2, 0xe0d4_7bc8), (11, 0xc0b3_bd23)];
/// The TCG platform configuration register SMBIOS structures go to.
pub const PCR_PLATFORM_CONFIG: u32 = 1;
/// SMBIOS type 1 "Wake-up Type", zeroed before measuring (it says how the machine powered on).
const SMBIOS_TYPE1_WAKE_UP_TYPE: usize = 0x18;
/// systemd `TPM2_PCR_BOOT_LOADER_CONFIG`.
pub const PCR_BOOT_LOADER_CONFIG: u32 = 5;
/// systemd `TPM2_PCR_KERNEL_BOOT`: the UKI sections.
pub const PCR_KERNEL_BOOT: u32 = 11;
/// systemd `TPM2_PCR_KERNEL_CONFIG`: command lines, credentials.
pub const PCR_KERNEL_CONFIG: u32 = 12;

/// A UKI's sections, located by name (the first section of each name, as systemd's
/// `pe_locate_sections` takes it).
pub struct Uki<'a> {
    bytes: &'a [u8],
    sections: Vec<Section>,
}

impl<'a> Uki<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Uki<'a>, PeError> {
        let image = PeImage::parse(bytes)?;
        Ok(Uki {
            bytes,
            sections: image.sections,
        })
    }

    fn find(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The section's bytes as the loaded image holds them: VirtualSize bytes, the part past
    /// SizeOfRawData zero-filled. `None` when the UKI has no such section.
    pub fn section(&self, name: &str) -> Result<Option<Cow<'a, [u8]>>, PeError> {
        let Some(section) = self.find(name) else {
            return Ok(None);
        };
        let in_file = section.virtual_size.min(section.size_of_raw_data);
        let start = u64::from(section.pointer_to_raw_data);
        let end = start + u64::from(in_file);
        if end > self.bytes.len() as u64 {
            return Err(PeError::Truncated {
                what: "UKI section data",
                offset: start,
                need: u64::from(in_file),
                len: self.bytes.len(),
            });
        }
        let data = &self.bytes[start as usize..end as usize];
        if in_file == section.virtual_size {
            return Ok(Some(Cow::Borrowed(data)));
        }
        let mut filled = data.to_vec();
        filled.resize(section.virtual_size as usize, 0);
        Ok(Some(Cow::Owned(filled)))
    }

    /// `.linux`: the kernel image the stub loads.
    pub fn linux(&self) -> Result<Cow<'a, [u8]>, PeError> {
        self.section(".linux")?.ok_or_else(|| PeError::Invalid {
            what: "UKI",
            offset: 0,
            reason: "no .linux section".into(),
        })
    }

    /// `.cmdline` as text (lossy UTF-8, as systemd widens bytes one by one).
    pub fn cmdline(&self) -> Result<Option<String>, PeError> {
        Ok(self
            .section(".cmdline")?
            .map(|c| String::from_utf8_lossy(&c).into_owned()))
    }
}

/// UTF-16LE with a terminating NUL: how systemd logs names and command lines.
fn utf16z(text: &str) -> Vec<u8> {
    let mut out = utf16le(text);
    out.extend_from_slice(&[0, 0]);
    out
}

/// systemd `mangle_stub_cmdline`: control characters become spaces, trailing spaces go.
pub fn mangle_cmdline(text: &str) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if (c as u32) <= 0x1f { ' ' } else { c })
        .collect();
    spaced.trim_end_matches(' ').to_string()
}

/// The two PCR11 events of one section: its name, then its bytes.
pub fn section_events(name: &str, data: &[u8]) -> [Event; 2] {
    let logged = utf16z(name);
    let mut ascii = name.as_bytes().to_vec();
    ascii.push(0);
    let varies: &[Input] = match name {
        ".linux" => &[Input::Kernel, Input::Uki],
        ".cmdline" => &[Input::Cmdline, Input::Uki],
        ".initrd" => &[Input::Initrd, Input::Uki],
        _ => &[Input::Uki],
    };
    [
        Event::measured(
            PCR_KERNEL_BOOT,
            EventType::IPL,
            format!("uki:{name}:name"),
            &ascii,
            Some(logged.clone()),
        )
        .varies_with(&[Input::SystemdVersion]),
        Event::measured(
            PCR_KERNEL_BOOT,
            EventType::IPL,
            format!("uki:{name}"),
            data,
            Some(logged),
        )
        .varies_with(varies),
    ]
}

/// Every PCR11 event the stub logs for `uki`, in its order. `cmdline` replaces the `.cmdline`
/// section's text (a prediction-only override).
pub fn stub_section_events(
    uki: &Uki,
    quirks: &Quirks,
    cmdline: Option<&str>,
) -> Result<Vec<Event>, PeError> {
    let mut events = Vec::new();
    for &name in quirks.stub_measured_sections {
        let data = match (name, cmdline) {
            (".cmdline", Some(text)) => Some(Cow::Owned(text.as_bytes().to_vec())),
            _ => uki.section(name)?,
        };
        if let Some(data) = data {
            events.extend(section_events(name, &data));
        }
    }
    Ok(events)
}

/// EV_IPL of a command line into PCR12 (systemd `tpm_log_load_options`): data and digest are the
/// UTF-16 text with its NUL.
pub fn load_options_event(label: &str, cmdline: &str) -> Event {
    Event::hashed_data(PCR_KERNEL_CONFIG, EventType::IPL, label, utf16z(cmdline))
        .varies_with(&[Input::Cmdline, Input::SystemdVersion])
}

/// systemd-boot's `loader.conf` event (PCR5).
pub fn loader_conf_event(contents: &[u8]) -> Event {
    let description = utf16z("loader.conf");
    let mut data = LOADER_CONF_EVENT_TAG.to_le_bytes().to_vec();
    data.extend_from_slice(&(description.len() as u32).to_le_bytes());
    data.extend_from_slice(&description);
    Event::measured(
        PCR_BOOT_LOADER_CONFIG,
        EventType::EVENT_TAG,
        "systemd-boot:loader.conf",
        contents,
        Some(data),
    )
    .varies_with(&[Input::Bootloader, Input::SystemdVersion])
}

/// systemd-boot's PCR1 SMBIOS events (docs/TPM2_PCR_MEASUREMENTS.md "PCR 1, EV_EVENT_TAG,
/// SMBIOS information"): one tagged event per type 1, type 2 and type 11 structure the firmware
/// installed, in table order, over its raw bytes (formatted area and strings), a type 1's
/// Wake-up Type zeroed. `structures` are QEMU's (OVMF installs them unchanged).
pub fn smbios_events(structures: &[&[u8]]) -> Vec<Event> {
    let mut events = Vec::new();
    for structure in structures {
        let Some(&(kind, tag)) = SMBIOS_EVENT_TAGS.iter().find(|(k, _)| *k == structure[0]) else {
            continue;
        };
        let mut measured = structure.to_vec();
        if kind == 1 && usize::from(measured[1]) > SMBIOS_TYPE1_WAKE_UP_TYPE {
            measured[SMBIOS_TYPE1_WAKE_UP_TYPE] = 0;
        }
        let name = format!("smbios:type{kind}");
        let description = utf16z(&name);
        let mut data = tag.to_le_bytes().to_vec();
        data.extend_from_slice(&(description.len() as u32).to_le_bytes());
        data.extend_from_slice(&description);
        events.push(
            Event::measured(
                PCR_PLATFORM_CONFIG,
                EventType::EVENT_TAG,
                format!("systemd-boot:{name}"),
                &measured,
                Some(data),
            )
            .varies_with(&[Input::QemuVersion, Input::SystemdVersion]),
        );
    }
    events
}

/// One newc record as systemd `cpio.c` writes it: nlink 1, times and ids zero.
fn cpio_record(out: &mut Vec<u8>, inode: u32, mode: u32, name: &str, data: &[u8]) {
    crate::cpio::write_record(
        out,
        &crate::cpio::Record {
            inode,
            mode,
            nlink: 1,
            name,
            data,
            rdev: (0, 0),
        },
    );
}

/// systemd `pack_cpio_literal(data, ".extra", file, 0555, 0444)`: the `.extra` directory, the
/// file, then the fixed trailer record (whose name size is written `0000000B`).
pub fn extra_cpio(file: &str, data: &[u8]) -> Vec<u8> {
    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    let mut out = Vec::new();
    cpio_record(&mut out, 1, S_IFDIR | 0o555, ".extra", &[]);
    cpio_record(
        &mut out,
        2,
        S_IFREG | 0o444,
        &format!(".extra/{file}"),
        data,
    );
    out.extend_from_slice(b"070701");
    for field in ["00000000"; 4] {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(b"00000001");
    for field in ["00000000"; 6] {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(b"0000000B00000000TRAILER!!!\0\0\0\0");
    out
}

/// The initrd the stub serves to the kernel: its pieces in systemd's merge order; one piece is
/// passed as is, several are each padded to 4 bytes and concatenated (`combine_initrds`).
pub fn stub_initrd(uki: &Uki, quirks: &Quirks) -> Result<Vec<u8>, PeError> {
    let mut pieces: Vec<Cow<[u8]>> = Vec::new();
    if quirks.stub_measured_sections.contains(&".ucode") {
        pieces.extend(uki.section(".ucode")?);
    }
    pieces.extend(uki.section(".initrd")?);
    if quirks.stub_initrd_osrel_cpio {
        if let Some(osrel) = uki.section(".osrel")? {
            pieces.push(Cow::Owned(extra_cpio("os-release", &osrel)));
        }
    }
    if pieces.len() == 1 {
        return Ok(pieces.remove(0).into_owned());
    }
    let mut out = Vec::new();
    for piece in &pieces {
        out.extend_from_slice(piece);
        crate::cpio::pad4(&mut out);
    }
    Ok(out)
}
