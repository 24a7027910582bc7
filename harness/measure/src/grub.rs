//! OVMF → shim → GRUB → Linux from an ESP: the grub.cfg the harness writes, and what shim and
//! GRUB measure.
//!
//! shim (rhboot/shim 16.1 `mok.c` `mirror_one_mok_variable`) logs the MOK databases it mirrors
//! as EV_IPL into PCR14, named by their variable (NUL-terminated ASCII): `MokList` is its
//! built-in vendor certificate as one EFI_SIGNATURE_LIST (`categorize_authorized`,
//! `fill_esl_with_one_signature`: X.509 type, owner SHIM_LOCK_GUID), `MokListX` its built-in
//! deauthorized list, already an ESL (`categorize_deauthorized`), and `MokListTrusted` one byte
//! `01` (`MOK_VARIABLE_INVERSE` of an absent variable). Between them it measures `SbatLevel`
//! into PCR7 as EV_EFI_VARIABLE_AUTHORITY (`MOK_VARIABLE_MEASURE`, `tpm_measure_variable`): with
//! Secure Boot off the level it writes is `SBAT_VAR_ORIGINAL` (sbat.c
//! `set_sbat_uefi_variable`, include/sbat_var_defs.h).
//!
//! GRUB's TPM verifier (grub-core/commands/tpm.c, `grub_tpm_verify_string` /
//! `grub_tpm_verify_write`) measures every executed command line as `grub_cmd: …` into PCR8 (the
//! digest covers the command text alone), the kernel command line it builds as
//! `kernel_cmdline: …` (the path and arguments, without the `BOOT_IMAGE=` it passes to Linux),
//! and every file it opens for reading (config, kernel, initrd) into PCR9, named by the path it
//! was opened with. All events are NUL-terminated ASCII EV_IPL.

use crate::event::{Digests, Event, EventType, Input, Platforms};
use crate::reader::{Reader, Truncated};
use crate::uefi::{Guid, VariableData};
use thiserror::Error;

/// SHIM_LOCK_GUID 605dab50-e046-4300-abb6-3dd810dd8b23, the vendor of shim's variables.
pub const SHIM_LOCK_GUID: Guid = Guid::from_fields(
    0x605d_ab50,
    0xe046,
    0x4300,
    [0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23],
);
/// EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072.
const EFI_CERT_X509_GUID: Guid = Guid::from_fields(
    0xa5c0_59a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// shim's `SBAT_VAR_ORIGINAL` (include/sbat_var_defs.h), what it sets with Secure Boot off.
pub const SBAT_VAR_ORIGINAL: &str = "sbat,1,2021030218\n";

/// The path of the kernel and initrd on the ESP, as grub.cfg names them.
pub const KERNEL: &str = "/vmlinuz";
pub const INITRD: &str = "/initrd.img";
/// The grub.cfg Debian's signed GRUB reads: its built-in prefix `/EFI/debian` on the device it
/// was started from, which GRUB names `(hd0,gpt1)` for the first disk's first partition.
pub const CONFIG_AS_OPENED: &str = "(hd0,gpt1)/EFI/debian/grub.cfg";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GrubError {
    #[error("shim: {0}")]
    Shim(String),
    #[error(
        "grub.cfg line {line} ({text:?}) holds {what}: GRUB would expand or split it, which is \
         not predicted; write it without"
    )]
    Unpredicted {
        line: usize,
        text: String,
        what: &'static str,
    },
}

/// The grub.cfg of a shim + GRUB boot: the scenario's extra `lines`, then the kernel with its
/// command line, the initrd, and `boot` (a grub.cfg without menu entries otherwise ends at GRUB's
/// prompt).
pub fn config(lines: &[String], cmdline: &str) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!("linux {KERNEL} {cmdline}\n"));
    text.push_str(&format!("initrd {INITRD}\n"));
    text.push_str("boot\n");
    text
}

/// What GRUB's script engine would treat specially (variables, quoting, blocks, several commands
/// on a line). A line with none of these runs as its words joined by one space.
const SPECIAL: &[(char, &str)] = &[
    ('$', "a `$` (variable expansion)"),
    ('"', "a quote"),
    ('\'', "a quote"),
    ('\\', "a backslash (escape)"),
    (';', "a `;` (several commands)"),
    ('{', "a block"),
    ('}', "a block"),
    ('|', "a `|`"),
    ('&', "a `&`"),
    ('<', "a `<`"),
    ('>', "a `>`"),
];

/// The command lines GRUB runs from `cfg`, in order, as it measures them: each line's words
/// joined by one space; blank lines and `#` comments run nothing.
pub fn commands(cfg: &str) -> Result<Vec<String>, GrubError> {
    let mut out = Vec::new();
    for (index, line) in cfg.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some((_, what)) = SPECIAL.iter().find(|(c, _)| trimmed.contains(*c)) {
            return Err(GrubError::Unpredicted {
                line: index + 1,
                text: line.to_owned(),
                what,
            });
        }
        out.push(trimmed.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(out)
}

/// An EV_IPL event of GRUB's: digest over `measured`, data the NUL-terminated description.
fn ipl(pcr: u32, label: String, measured: &[u8], description: &str) -> Event {
    ipl_of(pcr, label, Digests::of(measured), description)
}

fn ipl_of(pcr: u32, label: String, digests: Digests, description: &str) -> Event {
    let mut data = description.as_bytes().to_vec();
    data.push(0);
    Event {
        pcr,
        event_type: EventType::IPL,
        digests,
        data: Some(data),
        label,
        varies_with: Vec::new(),
        platforms: Platforms::BOTH,
    }
}

/// The label a logged shim or GRUB event gets, read from its own data, so that one the
/// prediction lacks is still named (`grub:cmd`, `grub:kernel_cmdline`, `grub:file:/vmlinuz`,
/// `shim:MokList`, `shim:SbatLevel`, …), as the predicted ones are.
pub fn logged_label(event: &Event) -> Option<String> {
    let data = event.data.as_deref()?;
    if event.event_type == EventType::EFI_VARIABLE_AUTHORITY {
        let variable = VariableData::parse(data).ok()?;
        return (variable.vendor == SHIM_LOCK_GUID).then(|| format!("shim:{}", variable.name));
    }
    if event.event_type != EventType::IPL {
        return None;
    }
    let text = std::str::from_utf8(data.strip_suffix(&[0])?).ok()?;
    match event.pcr {
        8 if text.starts_with("grub_cmd: ") => Some("grub:cmd".into()),
        8 if text.starts_with("kernel_cmdline: ") => Some("grub:kernel_cmdline".into()),
        8 if text.starts_with("module_cmdline: ") => Some("grub:module_cmdline".into()),
        // Files, named as opened; a leading `(device)` is left out as in the predicted labels.
        9 if text.starts_with('/') || text.starts_with('(') => {
            let path = match text.strip_prefix('(') {
                Some(rest) => rest.split_once(')').map_or(rest, |(_, path)| path),
                None => text,
            };
            Some(format!("grub:file:{path}"))
        }
        14 if text.starts_with("Mok") => Some(format!("shim:{text}")),
        _ => None,
    }
}

/// What GRUB opens and runs from grub.cfg, with the files it reads.
pub struct GrubFiles<'a> {
    pub config: &'a [u8],
    pub kernel: &'a [u8],
    pub initrd: &'a Digests,
}

/// GRUB's events, from reading grub.cfg to `boot`: the config file (measured twice, see the
/// quirk `grub-config-measured-twice`), then per command its `grub_cmd`, and for `linux` the
/// kernel file and `kernel_cmdline`, for `initrd` the initrd file. Returns the events and the
/// command line GRUB passes to Linux (`BOOT_IMAGE=` + path and arguments).
pub fn grub_events(
    files: &GrubFiles,
    config_reads: usize,
) -> Result<(Vec<Event>, Option<String>), GrubError> {
    let text = String::from_utf8_lossy(files.config);
    let mut events = Vec::new();
    for _ in 0..config_reads {
        events.push(
            ipl(
                9,
                "grub:file:/EFI/debian/grub.cfg".into(),
                files.config,
                CONFIG_AS_OPENED,
            )
            .varies_with(&[Input::Cmdline]),
        );
    }
    let mut linux_cmdline = None;
    for command in commands(&text)? {
        events.push(
            ipl(
                8,
                "grub:cmd".into(),
                command.as_bytes(),
                &format!("grub_cmd: {command}"),
            )
            .varies_with(&[Input::Cmdline]),
        );
        let mut words = command.split(' ');
        match (words.next(), words.next()) {
            (Some("linux"), Some(KERNEL)) => {
                events.push(
                    ipl(9, format!("grub:file:{KERNEL}"), files.kernel, KERNEL)
                        .varies_with(&[Input::Kernel]),
                );
                let args = command["linux ".len()..].to_owned();
                events.push(
                    ipl(
                        8,
                        "grub:kernel_cmdline".into(),
                        args.as_bytes(),
                        &format!("kernel_cmdline: {args}"),
                    )
                    .varies_with(&[Input::Cmdline]),
                );
                linux_cmdline = Some(format!("BOOT_IMAGE={args}"));
            }
            (Some("initrd"), Some(INITRD)) => events.push(
                ipl_of(
                    9,
                    format!("grub:file:{INITRD}"),
                    files.initrd.clone(),
                    INITRD,
                )
                .varies_with(&[Input::Initrd]),
            ),
            _ => {}
        }
    }
    Ok((events, linux_cmdline))
}

/// A section of a PE image by its full name: COFF long names (`/N`) are offsets into the string
/// table after the symbol table, which is how shim's `.vendor_cert` and `.sbatlevel` are named.
fn long_named_section<'a>(image: &'a [u8], wanted: &str) -> Result<&'a [u8], GrubError> {
    let err = |what: &str| GrubError::Shim(format!("{what} (looking for section {wanted})"));
    let truncated = |e: Truncated| err(&e.to_string());
    let u32_at = |at: usize, field| Reader::at(image, at).u32(field).map_err(truncated);
    let pe = crate::pe::PeImage::parse(image).map_err(|e| GrubError::Shim(e.to_string()))?;
    let coff = u32_at(0x3c, "e_lfanew")? as usize + 4;
    let symbols = u32_at(coff + 8, "PointerToSymbolTable")? as usize;
    let strings = symbols + 18 * u32_at(coff + 12, "NumberOfSymbols")? as usize;
    for section in &pe.sections {
        let name = match section.name.strip_prefix('/') {
            Some(offset) => {
                let start = strings + offset.parse::<usize>().map_err(|_| err("bad long name"))?;
                let rest = image
                    .get(start..)
                    .ok_or_else(|| err("long name out of file"))?;
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                String::from_utf8_lossy(&rest[..end]).into_owned()
            }
            None => section.name.clone(),
        };
        if name == wanted {
            let start = section.pointer_to_raw_data as usize;
            let len = match section.virtual_size {
                0 => section.size_of_raw_data,
                v => v.min(section.size_of_raw_data),
            } as usize;
            return Reader::at(image, start)
                .bytes(len, "section data")
                .map_err(truncated);
        }
    }
    Err(err("no such section"))
}

/// shim's built-in certificates: (`vendor_authorized`, `vendor_deauthorized`) from its
/// `.vendor_cert` section (shim.h `cert_table`: four u32 sizes and offsets, then the data).
fn vendor_certs(shim: &[u8]) -> Result<(&[u8], &[u8]), GrubError> {
    cert_table(long_named_section(shim, ".vendor_cert")?)
}

/// The two certificates a `.vendor_cert` section's `cert_table` points at.
fn cert_table(table: &[u8]) -> Result<(&[u8], &[u8]), GrubError> {
    let truncated = |e: Truncated| GrubError::Shim(format!(".vendor_cert: {e}"));
    let mut r = Reader::new(table);
    let auth_size = r.u32("vendor_authorized_size").map_err(truncated)?;
    let deauth_size = r.u32("vendor_deauthorized_size").map_err(truncated)?;
    let auth_offset = r.u32("vendor_authorized_offset").map_err(truncated)?;
    let deauth_offset = r.u32("vendor_deauthorized_offset").map_err(truncated)?;
    let part = |offset: u32, size: u32, field| {
        Reader::at(table, offset as usize)
            .bytes(size as usize, field)
            .map_err(truncated)
    };
    Ok((
        part(auth_offset, auth_size, "vendor_authorized")?,
        part(deauth_offset, deauth_size, "vendor_deauthorized")?,
    ))
}

/// One EFI_SIGNATURE_LIST of one signature (`fill_esl_with_one_signature`).
fn esl_of_one(signature_type: Guid, owner: Guid, data: &[u8]) -> Vec<u8> {
    let signature_size = 16 + data.len() as u32;
    let mut out = signature_type.0.to_vec();
    out.extend_from_slice(&(28 + signature_size).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&signature_size.to_le_bytes());
    out.extend_from_slice(&owner.0);
    out.extend_from_slice(data);
    out
}

/// shim's events after the firmware measured it: MokList, MokListX (PCR14), SbatLevel (PCR7),
/// MokListTrusted (PCR14), in the order shim logs them.
pub fn shim_events(shim: &[u8]) -> Result<Vec<Event>, GrubError> {
    let (authorized, deauthorized) = vendor_certs(shim)?;
    if authorized.is_empty() || deauthorized.is_empty() {
        return Err(GrubError::Shim(
            "a shim without a built-in vendor certificate or deauthorized list mirrors other \
             MOK databases, which is not predicted"
                .into(),
        ));
    }
    let mok_list = esl_of_one(EFI_CERT_X509_GUID, SHIM_LOCK_GUID, authorized);
    let sbat = VariableData::new(SHIM_LOCK_GUID, "SbatLevel", SBAT_VAR_ORIGINAL.as_bytes());
    Ok(vec![
        ipl(14, "shim:MokList".into(), &mok_list, "MokList").varies_with(&[Input::Bootloader]),
        ipl(14, "shim:MokListX".into(), deauthorized, "MokListX").varies_with(&[Input::Bootloader]),
        Event::hashed_data(
            7,
            EventType::EFI_VARIABLE_AUTHORITY,
            "shim:SbatLevel",
            sbat.encode(),
        )
        .varies_with(&[Input::Bootloader, Input::SecureBoot]),
        ipl(14, "shim:MokListTrusted".into(), &[1], "MokListTrusted")
            .varies_with(&[Input::Bootloader]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_config_runs_its_lines_then_linux_initrd_boot() {
        let cfg = config(&["set timeout=0".into()], "console=ttyS0");
        assert_eq!(
            commands(&cfg).unwrap(),
            [
                "set timeout=0",
                "linux /vmlinuz console=ttyS0",
                "initrd /initrd.img",
                "boot"
            ]
        );
    }

    #[test]
    fn lines_grub_would_expand_are_refused_with_the_line() {
        let err = commands("set a=1\necho $a\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains('$'), "{err}");
        assert!(commands("echo \"x\"").is_err());
        // Blank lines and comments run nothing; runs of blanks collapse.
        assert_eq!(commands("\n# c\n  set   a=1  \n").unwrap(), ["set a=1"]);
    }

    #[test]
    fn a_short_cert_table_names_the_field_and_offset() {
        // cert_table: sizes 2 and 1, offsets 16 and 18, then the three bytes.
        let mut table = Vec::new();
        for n in [2u32, 1, 16, 18] {
            table.extend_from_slice(&n.to_le_bytes());
        }
        table.extend_from_slice(&[0xa, 0xb, 0xc]);
        assert_eq!(cert_table(&table).unwrap(), (&[0xa, 0xb][..], &[0xc][..]));
        let err = cert_table(&table[..10]).unwrap_err().to_string();
        assert!(
            err.contains("offset 8: vendor_authorized_offset needs 4 bytes, 2 left"),
            "{err}"
        );
        let err = cert_table(&table[..18]).unwrap_err().to_string();
        assert!(
            err.contains("offset 18: vendor_deauthorized needs 1 bytes, 0 left"),
            "{err}"
        );
    }

    #[test]
    fn grub_events_of_a_real_boot() {
        // From the capture in tests/data/grub-vtpm (GRUB 2.12-9+deb13u4): "grub_cmd: linux
        // /vmlinuz console=ttyS0" has SHA-256 5c3bc6c8…, "kernel_cmdline: /vmlinuz
        // console=ttyS0" d593b4a3…; tests/grub_capture.rs compares every event in full.
        let initrd = Digests::of(b"initrd");
        let cfg = config(&[], "console=ttyS0");
        let files = GrubFiles {
            config: cfg.as_bytes(),
            kernel: b"kernel",
            initrd: &initrd,
        };
        let (events, cmdline) = grub_events(&files, 2).unwrap();
        let labels: Vec<&str> = events.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "grub:file:/EFI/debian/grub.cfg",
                "grub:file:/EFI/debian/grub.cfg",
                "grub:cmd",
                "grub:file:/vmlinuz",
                "grub:kernel_cmdline",
                "grub:cmd",
                "grub:file:/initrd.img",
                "grub:cmd",
            ]
        );
        assert_eq!(
            hex::encode(events[2].digests.sha256.unwrap())[..8],
            *"5c3bc6c8"
        );
        assert_eq!(
            hex::encode(events[4].digests.sha256.unwrap())[..8],
            *"d593b4a3"
        );
        assert_eq!(
            events[4].data.as_deref(),
            Some(&b"kernel_cmdline: /vmlinuz console=ttyS0\0"[..])
        );
        assert_eq!(
            cmdline.as_deref(),
            Some("BOOT_IMAGE=/vmlinuz console=ttyS0")
        );
    }
}
