//! `mrlab-agent`: PID 1 of the harness initramfs. Mounts the pseudo file systems, loads the
//! modules the image lists, collects every piece of measurement evidence the guest can see, writes
//! one framed record (see `agent::record`) to the serial console and powers the VM off.
//!
//! It never stops on a missing source: each problem becomes a line of the `errors` entry, which
//! the host turns into a visible note.

use agent::record::{
    self, Record, CCEL_DATA_ENTRY, CCEL_TABLE_ENTRY, CMDLINE_ENTRY, ERRORS_ENTRY,
    FW_CFG_SKIPPED_ENTRY, KERNEL_RELEASE_ENTRY, QUOTE_ENTRY, TDREPORT_ENTRY, TPM_EVENT_LOG_ENTRY,
};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Modules to load, one absolute path a line, dependencies first (written by the image builder).
const MODULE_LIST: &str = "/etc/mrlab/modules";
/// Kernel command line parameter carrying the TDREPORT REPORTDATA nonce, hex, at most 64 bytes.
const NONCE_PARAM: &str = "mrlab.nonce=";
/// PCR indices the kernel exposes per bank under /sys/class/tpm/tpm0/pcr-<bank>/.
const PCR_COUNT: u32 = 24;
const PCR_BANKS: [&str; 2] = ["sha256", "sha384"];
/// `TDX_CMD_GET_REPORT0` = `_IOWR('T', 1, struct tdx_report_req)` with a 64-byte REPORTDATA and
/// a 1024-byte TDREPORT (Linux include/uapi/linux/tdx-guest.h).
const TDX_CMD_GET_REPORT0: libc::c_ulong = 0xc440_5401;
const TDX_REPORTDATA_LEN: usize = 64;
const TDX_REPORT_LEN: usize = 1024;
/// `SYSLOG_ACTION_CONSOLE_LEVEL` for klogctl.
const SYSLOG_ACTION_CONSOLE_LEVEL: libc::c_int = 8;

struct Collector {
    record: Record,
    errors: Vec<String>,
}

impl Collector {
    fn error(&mut self, line: String) {
        self.errors.push(line);
    }

    /// Reads `path` into entry `name`; an unreadable file is an error line when `expected`.
    fn file(&mut self, name: &str, path: &str, expected: bool) {
        match fs::read(path) {
            Ok(data) => self.record.push(name, data),
            Err(e) if expected => self.error(format!("{name}: {path}: {e}")),
            Err(_) => {}
        }
    }
}

fn main() {
    let mut c = Collector {
        record: Record::default(),
        errors: Vec::new(),
    };
    // First, so kernel messages do not interleave with the record on the shared serial line.
    // SAFETY: klogctl with a null buffer and a level only sets the console log level.
    if unsafe { libc::klogctl(SYSLOG_ACTION_CONSOLE_LEVEL, std::ptr::null_mut(), 1) } != 0 {
        c.error(format!(
            "console: klogctl(CONSOLE_LEVEL, 1): {}",
            std::io::Error::last_os_error()
        ));
    }
    mount(&mut c, "proc", "/proc", "proc");
    mount(&mut c, "sysfs", "/sys", "sysfs");
    mount(&mut c, "devtmpfs", "/dev", "devtmpfs");
    load_modules(&mut c);
    mount(&mut c, "securityfs", "/sys/kernel/security", "securityfs");
    mount(&mut c, "configfs", "/sys/kernel/config", "configfs");

    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    c.record.push(CMDLINE_ENTRY, cmdline.clone());
    let release = kernel_release(&mut c);
    c.record.push(KERNEL_RELEASE_ENTRY, release);
    let is_td = cpu_has_flag("tdx_guest");

    collect_tpm(&mut c, !is_td);
    collect_fw_cfg(&mut c);
    c.file(CCEL_TABLE_ENTRY, "/sys/firmware/acpi/tables/CCEL", is_td);
    c.file(
        CCEL_DATA_ENTRY,
        "/sys/firmware/acpi/tables/data/CCEL",
        is_td,
    );
    if is_td || Path::new("/dev/tdx_guest").exists() {
        let nonce = nonce(&mut c, &cmdline);
        collect_tdreport(&mut c, &nonce);
        collect_quote(&mut c, &nonce);
    }

    let mut errors = c.errors.join("\n");
    if !errors.is_empty() {
        errors.push('\n');
    }
    c.record.push(ERRORS_ENTRY, errors);
    emit(&c.record);
    power_off();
}

fn mount(c: &mut Collector, source: &str, target: &str, fstype: &str) {
    if let Err(e) = fs::create_dir_all(target) {
        // sysfs directories cannot be created; mounting may still work if they exist.
        if !Path::new(target).is_dir() {
            c.error(format!("mount {fstype} on {target}: mkdir: {e}"));
            return;
        }
    }
    let (Ok(src), Ok(tgt), Ok(fst)) = (
        CString::new(source),
        CString::new(target),
        CString::new(fstype),
    ) else {
        c.error(format!("mount {fstype} on {target}: NUL in argument"));
        return;
    };
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        c.error(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

fn load_modules(c: &mut Collector) {
    let list = match fs::read_to_string(MODULE_LIST) {
        Ok(l) => l,
        Err(e) => return c.error(format!("modules: {MODULE_LIST}: {e}")),
    };
    for path in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                c.error(format!("modules: {path}: {e}"));
                continue;
            }
        };
        let params = c"";
        // SAFETY: finit_module takes an open fd, a NUL-terminated parameter string and flags.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // EEXIST: already loaded. ENODEV: the module's hardware is absent (tdx_guest
            // outside a TD); the collector reports absent evidence where it was expected.
            if !matches!(err.raw_os_error(), Some(libc::EEXIST | libc::ENODEV)) {
                c.error(format!("modules: finit_module {path}: {err}"));
            }
        }
    }
}

fn kernel_release(c: &mut Collector) -> String {
    match fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(s) => s.trim().to_owned(),
        Err(e) => {
            c.error(format!("kernel/release: /proc/sys/kernel/osrelease: {e}"));
            String::new()
        }
    }
}

fn cpu_has_flag(flag: &str) -> bool {
    fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == flag))
        })
        .unwrap_or(false)
}

fn collect_tpm(c: &mut Collector, expected: bool) {
    c.file(
        TPM_EVENT_LOG_ENTRY,
        "/sys/kernel/security/tpm0/binary_bios_measurements",
        expected,
    );
    for bank in PCR_BANKS {
        let dir = format!("/sys/class/tpm/tpm0/pcr-{bank}");
        if !Path::new(&dir).is_dir() {
            if expected {
                c.error(format!("tpm/pcr-{bank}: {dir}: no such directory"));
            }
            continue;
        }
        for n in 0..PCR_COUNT {
            c.file(&record::pcr_entry(bank, n), &format!("{dir}/{n}"), true);
        }
    }
}

/// fw_cfg files larger than this are listed in [`FW_CFG_SKIPPED_ENTRY`] instead of read. Linux's
/// `qemu_fw_cfg` reads `raw` by port I/O, 4 KiB per read(), each read re-selecting the file and
/// discarding the bytes before its offset: time grows with the square of the size. QEMU ≥ 10.0
/// serves the whole `-kernel` image again as `etc/boot/kernel` (hw/i386/x86-common.c
/// `x86_load_linux`), ~8 MiB, which would take hours under TCG. The host cross-checks only ACPI
/// blobs and `bootorder` (all far smaller) and reads big files from its own QEMU by DMA.
const FW_CFG_READ_LIMIT: u64 = 1 << 20;

/// Every fw_cfg file up to [`FW_CFG_READ_LIMIT`], by its fw_cfg name, from
/// /sys/firmware/qemu_fw_cfg/by_key/<key>/{name,size,raw}.
fn collect_fw_cfg(c: &mut Collector) {
    let base = "/sys/firmware/qemu_fw_cfg/by_key";
    let dir = match fs::read_dir(base) {
        Ok(d) => d,
        Err(e) => return c.error(format!("fw_cfg: {base}: {e}")),
    };
    let mut keys: Vec<(u32, std::path::PathBuf)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let key = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((key, e.path()))
        })
        .collect();
    keys.sort();
    let mut skipped = String::new();
    for (key, path) in keys {
        let name = match fs::read_to_string(path.join("name")) {
            Ok(n) => n.trim_end_matches(['\n', '\0']).to_owned(),
            Err(e) => {
                c.error(format!("fw_cfg: key {key}: name: {e}"));
                continue;
            }
        };
        let size = fs::read_to_string(path.join("size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match size {
            Some(size) if size > FW_CFG_READ_LIMIT => {
                skipped.push_str(&format!("{name} {size}\n"));
                continue;
            }
            Some(_) => {}
            None => c.error(format!("fw_cfg/{name}: key {key}: size unreadable")),
        }
        match fs::read(path.join("raw")) {
            Ok(data) => c.record.push(record::fw_cfg_entry(&name), data),
            Err(e) => c.error(format!("fw_cfg/{name}: key {key}: raw: {e}")),
        }
    }
    c.record.push(FW_CFG_SKIPPED_ENTRY, skipped);
}

/// The REPORTDATA for TDREPORT and quote: `mrlab.nonce=<hex>` zero-padded to 64 bytes.
fn nonce(c: &mut Collector, cmdline: &str) -> [u8; TDX_REPORTDATA_LEN] {
    let mut out = [0u8; TDX_REPORTDATA_LEN];
    let Some(param) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(NONCE_PARAM))
    else {
        c.error(format!(
            "tdx: no {NONCE_PARAM}<hex> on the kernel command line; REPORTDATA is all zero"
        ));
        return out;
    };
    match hex::decode(param) {
        Ok(bytes) if bytes.len() <= TDX_REPORTDATA_LEN => {
            out[..bytes.len()].copy_from_slice(&bytes);
        }
        Ok(bytes) => c.error(format!(
            "tdx: {NONCE_PARAM} has {} bytes, more than {TDX_REPORTDATA_LEN}; REPORTDATA is all zero",
            bytes.len()
        )),
        Err(e) => c.error(format!(
            "tdx: {NONCE_PARAM}{param}: not hex ({e}); REPORTDATA is all zero"
        )),
    }
    out
}

fn collect_tdreport(c: &mut Collector, nonce: &[u8; TDX_REPORTDATA_LEN]) {
    #[repr(C)]
    struct TdxReportReq {
        reportdata: [u8; TDX_REPORTDATA_LEN],
        tdreport: [u8; TDX_REPORT_LEN],
    }
    let dev = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tdx_guest")
    {
        Ok(f) => f,
        Err(e) => return c.error(format!("tdx/tdreport: /dev/tdx_guest: {e}")),
    };
    let mut req = TdxReportReq {
        reportdata: *nonce,
        tdreport: [0; TDX_REPORT_LEN],
    };
    // SAFETY: the request struct has the layout the ioctl expects and outlives the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), TDX_CMD_GET_REPORT0, &mut req) };
    if rc != 0 {
        return c.error(format!(
            "tdx/tdreport: ioctl TDX_CMD_GET_REPORT0: {}",
            std::io::Error::last_os_error()
        ));
    }
    c.record.push(TDREPORT_ENTRY, req.tdreport.to_vec());
}

/// A quote through configfs-tsm: write REPORTDATA to `inblob`, read `outblob` (needs a QGS on
/// the host; without one the read fails and that is an error line, not a stop).
fn collect_quote(c: &mut Collector, nonce: &[u8; TDX_REPORTDATA_LEN]) {
    let base = Path::new("/sys/kernel/config/tsm/report");
    if !base.is_dir() {
        return c.error(format!(
            "tdx/quote: {}: no configfs-tsm report directory",
            base.display()
        ));
    }
    let dir = base.join("mrlab");
    if let Err(e) = fs::create_dir(&dir) {
        return c.error(format!("tdx/quote: mkdir {}: {e}", dir.display()));
    }
    let result = fs::write(dir.join("inblob"), nonce).and_then(|()| fs::read(dir.join("outblob")));
    match result {
        Ok(q) if !q.is_empty() => c.record.push(QUOTE_ENTRY, q),
        Ok(_) => c.error("tdx/quote: configfs-tsm outblob is empty".into()),
        Err(e) => c.error(format!("tdx/quote: configfs-tsm: {e}")),
    }
    let _ = fs::remove_dir(&dir);
}

/// Writes the frame to the first serial port (falling back to the console) and waits until the
/// UART has sent it, so powering off cannot cut it.
fn emit(record: &Record) {
    use std::os::unix::fs::OpenOptionsExt;
    let frame = format!("\n{}", record::encode(record));
    for path in ["/dev/ttyS0", "/dev/console"] {
        // O_NOCTTY: PID 1 must not take the port as controlling terminal (a hangup would kill it).
        let Ok(mut tty) = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
        else {
            continue;
        };
        if tty.write_all(frame.as_bytes()).is_ok() && tty.flush().is_ok() {
            // SAFETY: tcdrain on an open fd.
            unsafe { libc::tcdrain(tty.as_raw_fd()) };
            return;
        }
    }
    // Last resort: PID 1's stdout is the console the kernel opened.
    let mut out = std::io::stdout();
    let _ = out.write_all(frame.as_bytes());
    let _ = out.flush();
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; PID 1 may call reboot.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; PID 1 exiting panics the kernel, which -no-reboot turns
    // into a QEMU exit as well.
    std::process::exit(1)
}
