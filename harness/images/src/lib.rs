//! Guest images from pinned Debian packages: kernels, firmware, the agent initramfs, UKIs and
//! ESP disks, all built deterministically into a cache keyed by what went into them.
//!
//! Packages are fetched by `images/fetch.sh` into `<cache>/debs/<id>/` (a `dpkg-deb -x` root
//! plus a `.stamp` holding the `.deb`'s sha256). [`Cache`] checks each stamp against
//! `images/packages.lock` before handing out a path, so a stale cache is an error, not a
//! silently different image.

pub mod cpio;
pub mod disk;
pub mod grub;
pub mod modules;
pub mod ovmf;
pub mod uki;

pub use disk::DiskSpec;
pub use grub::GrubDiskSpec;
pub use uki::{UkiSpec, UKI_OS_RELEASE};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while locating or building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{path}: malformed package lock: {what}")]
    Lock { path: PathBuf, what: String },
    #[error("package {id:?} is not in {lock}")]
    UnknownPackage { id: String, lock: PathBuf },
    #[error("package {id:?} is not fetched ({dir} missing); run images/fetch.sh")]
    NotFetched { id: String, dir: PathBuf },
    #[error("package {id:?} in {dir} is stale: stamp {found:?}, lock wants {expected}; run images/fetch.sh")]
    StaleStamp {
        id: String,
        dir: PathBuf,
        expected: String,
        found: String,
    },
    #[error("package {id:?}: {what}")]
    Package { id: String, what: String },
    #[error("{path}: {what}")]
    Module { path: PathBuf, what: String },
    #[error("`{command}` failed: {output}")]
    Tool { command: String, output: String },
}

/// Runs a helper command (ukify, cargo) to completion, stdin closed and its output captured; a
/// failure to start or a non-zero exit is [`Error::Tool`] naming `describe`, with its stderr.
fn run_tool(expression: duct::Expression, describe: &str) -> Result<std::process::Output, Error> {
    let tool = |output: String| Error::Tool {
        command: describe.to_owned(),
        output,
    };
    let out = expression
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| tool(e.to_string()))?;
    if !out.status.success() {
        return Err(tool(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(out)
}

/// One `[[package]]` of `images/packages.lock`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Package {
    pub id: String,
    pub name: String,
    pub version: String,
    pub suite: String,
    pub sha256: String,
}

/// One `[[root]]` of `images/packages.lock`: a program with its whole Depends closure, extracted
/// together into `<cache>/roots/<id>/` by `images/fetch.sh` and started through its own loader.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Root {
    pub id: String,
    pub suites: Vec<String>,
    #[serde(default)]
    pub release: Option<String>,
    pub install: Vec<String>,
    /// `name version sha256`, one per .deb of the closure.
    pub packages: Vec<String>,
}

impl Root {
    /// What `images/fetch.sh` writes to `.stamp` once the root is extracted: sha256 over the
    /// member lines, each ending in a newline.
    fn stamp(&self) -> String {
        let mut h = Sha256::new();
        for line in &self.packages {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}

#[derive(Deserialize)]
struct LockFile {
    package: Vec<Package>,
    #[serde(default)]
    root: Vec<Root>,
}

/// A kernel package's boot image and modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage {
    pub vmlinuz: PathBuf,
    /// `uname -r` of the kernel, e.g. `6.1.0-50-amd64`.
    pub release: String,
    /// `lib/modules/<release>/` inside the extracted package.
    pub modules_dir: PathBuf,
}

/// The OVMF images a firmware package may hold, in the order they are looked for.
const FIRMWARE_IMAGES: [&str; 2] = [
    "usr/share/ovmf/OVMF.fd",
    "usr/share/ovmf/OVMF.inteltdx.ms.fd",
];

/// Where a root's dynamic loader is: bookworm's libc6 ships it in `lib/`, usr-merged suites
/// (trixie on) in `usr/lib/`.
const LOADERS: &[&str] = &[
    "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
];

/// A root's library dirs, searched in this order by its loader.
const LIBRARY_DIRS: &[&str] = &["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"];

/// Debian's QEMU firmware path (`--firmwarepath` in its build), inside a root.
const FIRMWARE_DIRS: &[&str] = &["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"];

/// The first of `candidates` (paths relative to `dir`) that is a file in package `id`, or an
/// error naming what was looked for and where.
fn first_file(id: &str, dir: &Path, candidates: &[&str], what: &str) -> Result<PathBuf, Error> {
    candidates
        .iter()
        .map(|rel| dir.join(rel))
        .find(|path| path.is_file())
        .ok_or_else(|| Error::Package {
            id: id.to_owned(),
            what: format!("no {what} ({}) in {}", candidates.join(", "), dir.display()),
        })
}

/// `dir/.stamp` must hold `expected` (what `images/fetch.sh` wrote after extracting).
fn check_stamp(id: &str, dir: &Path, expected: &str) -> Result<(), Error> {
    let stamp = dir.join(".stamp");
    let found = match fs::read_to_string(&stamp) {
        Ok(s) => s.trim().to_owned(),
        Err(_) if !dir.exists() => {
            return Err(Error::NotFetched {
                id: id.to_owned(),
                dir: dir.to_owned(),
            })
        }
        Err(e) => return Err(Error::Io(stamp, e)),
    };
    if found != expected {
        return Err(Error::StaleStamp {
            id: id.to_owned(),
            dir: dir.to_owned(),
            expected: expected.to_owned(),
            found,
        });
    }
    Ok(())
}

/// Modules the agent loads when the kernel has them as modules (built-in ones are skipped):
/// fw_cfg sysfs, configfs (for configfs-tsm), the TDX guest device (pulls `tsm`), TPM drivers.
pub const AGENT_MODULES: &[&str] = &["qemu_fw_cfg", "configfs", "tdx_guest", "tpm_tis", "tpm_crb"];

/// Where the agent lists the modules to load, dependencies first (read by `mrlab-agent`).
const AGENT_MODULE_LIST: &str = "etc/mrlab/modules";

/// Bumped whenever the initramfs layout changes, so old cache entries are not reused.
const INITRAMFS_FORMAT: &str = "mrlab-initramfs-v1";

/// Whether cargo last checked `binary` (the `checked` stamp) after the last change to each
/// source file its dep-info lists (`<binary>.d`, written with the binary) and to each of
/// `inputs` (manifests, lock file): then `cargo build` would only say it is fresh, and asking
/// it takes 0.2 to 0.5 s of every run before the first boot can start. Any doubt (no stamp, no
/// dep-info, a file that cannot be read) is a no, and cargo decides.
fn checked_after_its_sources(checked: &Path, binary: &Path, inputs: &[PathBuf]) -> bool {
    let mtime = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    let (Some(checked), Ok(dep_info)) = (
        mtime(checked),
        fs::read_to_string(binary.with_extension("d")),
    ) else {
        return false;
    };
    let Some(sources) = dep_info_sources(&dep_info) else {
        return false;
    };
    !sources.is_empty()
        && sources
            .iter()
            .map(PathBuf::from)
            .chain(inputs.iter().cloned())
            .all(|source| mtime(&source).is_some_and(|changed| changed <= checked))
}

/// The prerequisites of a make-style dep-info file's first rule (`target: a b\ c`), spaces
/// escaped with a backslash; `None` without a rule.
fn dep_info_sources(dep_info: &str) -> Option<Vec<String>> {
    let line = dep_info.lines().next()?;
    let (_, prerequisites) = line.split_once(": ")?;
    let mut sources = vec![String::new()];
    let mut chars = prerequisites.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => sources.last_mut()?.extend(chars.next()),
            ' ' => sources.push(String::new()),
            c => sources.last_mut()?.push(c),
        }
    }
    sources.retain(|s| !s.is_empty());
    Some(sources)
}

/// The checkout this crate was built from (the agent is built from its sources).
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    // Canonical when possible so printed paths read well; the raw path works all the same.
    root.canonicalize().unwrap_or(root)
}

/// The image cache: `<root>/debs/<id>` (fetched packages), `<root>/images/<key>/` (built images).
#[derive(Debug, Clone)]
pub struct Cache {
    repo: PathBuf,
    root: PathBuf,
    packages: Vec<Package>,
    roots: Vec<Root>,
}

impl Cache {
    /// Opens the cache of the checkout at `repo_root`: `$MRLAB_CACHE` if set, else
    /// `<repo_root>/.cache`, with the lock read from `<repo_root>/images/packages.lock`.
    pub fn open(repo_root: &Path) -> Result<Cache, Error> {
        let root = match std::env::var_os("MRLAB_CACHE") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => repo_root.join(".cache"),
        };
        Cache::open_at(repo_root, &root)
    }

    /// Opens the cache at an explicit `root` (tests build into fresh directories this way).
    pub fn open_at(repo_root: &Path, root: &Path) -> Result<Cache, Error> {
        let lock = repo_root.join("images/packages.lock");
        let text = fs::read_to_string(&lock).map_err(|e| Error::Io(lock.clone(), e))?;
        let parsed: LockFile = toml::from_str(&text).map_err(|e| Error::Lock {
            path: lock.clone(),
            what: e.to_string(),
        })?;
        Ok(Cache {
            repo: repo_root.to_owned(),
            root: root.to_owned(),
            packages: parsed.package,
            roots: parsed.root,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pinned packages, in lock order.
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// The lock's `[[root]]` entries.
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Why a VM with a TPM cannot run on firmware package `id`, if it cannot: Debian's
    /// `ovmf-inteltdx` is edk2's OvmfPkg/IntelTdx build, whose IntelTdxX64.dsc has TdTcg2Dxe
    /// (RTMR measurement) and no TPM driver (no Tcg2Dxe, no TPM2_ENABLE).
    pub fn firmware_without_tpm(&self, id: &str) -> Option<String> {
        let package = self.packages.iter().find(|p| p.id == id)?;
        (package.name == "ovmf-inteltdx").then(|| {
            format!(
                "{id} is Debian's {} {}, edk2's IntelTdx build: it has no TPM driver and boots \
                 only as a TD (`--platform tdx`, `--backend tdx`), never on vtpm",
                package.name, package.version
            )
        })
    }

    pub(crate) fn locked(&self, id: &str) -> Result<&Package, Error> {
        self.packages
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::UnknownPackage {
                id: id.to_owned(),
                lock: self.repo.join("images/packages.lock"),
            })
    }

    /// `<root>/<kind>/<id>`, or `<repo>/.cache/<kind>/<id>` when `root` has none, so a fresh
    /// build cache can reuse what images/fetch.sh extracted.
    fn extracted(&self, kind: &str, id: &str) -> PathBuf {
        let dir = self.root.join(kind).join(id);
        let shared = self.repo.join(".cache").join(kind).join(id);
        if !dir.exists() && shared.exists() {
            shared
        } else {
            dir
        }
    }

    /// The extracted package `<root>/debs/<id>/` (else the checkout's `.cache/debs/<id>/`),
    /// checked against the lock.
    pub fn package(&self, id: &str) -> Result<PathBuf, Error> {
        let expected = &self.locked(id)?.sha256;
        let dir = self.extracted("debs", id);
        check_stamp(id, &dir, expected)?;
        Ok(dir)
    }

    /// The kernel of package `id` (e.g. `kernel-6.1`): its one `boot/vmlinuz-<release>`.
    pub fn kernel(&self, id: &str) -> Result<KernelImage, Error> {
        let dir = self.package(id)?;
        let boot = dir.join("boot");
        let mut releases: Vec<String> = fs::read_dir(&boot)
            .map_err(|e| Error::Io(boot.clone(), e))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("vmlinuz-")
                    .map(str::to_owned)
            })
            .collect();
        releases.sort();
        let release = match releases.as_slice() {
            [one] => one.clone(),
            other => {
                return Err(Error::Package {
                    id: id.to_owned(),
                    what: format!("expected one boot/vmlinuz-*, found {other:?}"),
                })
            }
        };
        Ok(KernelImage {
            vmlinuz: boot.join(format!("vmlinuz-{release}")),
            modules_dir: dir.join("lib/modules").join(&release),
            release,
        })
    }

    /// The OVMF image of package `id` (e.g. `ovmf-2022.11`): `usr/share/ovmf/OVMF.fd`, or for
    /// Debian's `ovmf-inteltdx` (`ovmf-2026.08-inteltdx`), which ships no `OVMF.fd`, its one
    /// image `usr/share/ovmf/OVMF.inteltdx.ms.fd`.
    pub fn firmware(&self, id: &str) -> Result<PathBuf, Error> {
        first_file(id, &self.package(id)?, &FIRMWARE_IMAGES, "firmware image")
    }

    /// The Debian version root `id` pins for its member package `name`
    /// (`qemu-7.2`, `qemu-system-x86` → `1:7.2+dfsg-7+deb12u18`).
    pub fn root_package_version(&self, id: &str, name: &str) -> Option<&str> {
        let root = self.roots.iter().find(|r| r.id == id)?;
        root.packages.iter().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(name))
                .then(|| fields.next())
                .flatten()
        })
    }

    /// The extracted `[[root]]` `<cache>/roots/<id>/`, checked against the lock.
    pub fn program_root(&self, id: &str) -> Result<PathBuf, Error> {
        let locked =
            self.roots
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| Error::UnknownPackage {
                    id: id.to_owned(),
                    lock: self.repo.join("images/packages.lock"),
                })?;
        let dir = self.extracted("roots", id);
        check_stamp(id, &dir, &locked.stamp())?;
        Ok(dir)
    }

    /// The QEMU of root `id` (e.g. `qemu-7.2`: bookworm's `qemu-system-x86` with its whole
    /// library closure), started through the root's own dynamic loader so that it loads nothing
    /// of the host's: not its libc, not its `ld.so.cache` (`--inhibit-cache`), not its QEMU
    /// modules (`QEMU_MODULE_DIR`), not its firmware blobs (`-L`, one per dir of Debian's
    /// compiled-in firmware path `/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu`).
    pub fn qemu(&self, id: &str) -> Result<qemu::QemuBinary, Error> {
        let root = self.program_root(id)?;
        let inside = |rel: &str| -> Result<PathBuf, Error> {
            let path = root.join(rel);
            if path.exists() {
                Ok(path)
            } else {
                Err(Error::Package {
                    id: id.to_owned(),
                    what: format!("{} missing", path.display()),
                })
            }
        };
        let loader = first_file(id, &root, LOADERS, "dynamic loader")?;
        Ok(qemu::QemuBinary {
            program: inside("usr/bin/qemu-system-x86_64")?,
            loader: Some(qemu::Loader {
                path: loader,
                library_path: LIBRARY_DIRS
                    .iter()
                    .map(|rel| root.join(rel))
                    .filter(|p| p.is_dir())
                    .collect(),
            }),
            data_dirs: FIRMWARE_DIRS
                .iter()
                .map(|rel| root.join(rel))
                .filter(|p| p.is_dir())
                .collect(),
            env: vec![(
                "QEMU_MODULE_DIR".into(),
                inside("usr/lib/x86_64-linux-gnu/qemu")?,
            )],
        })
    }

    /// Builds (or finds up to date) the static `mrlab-agent` binary. Cargo decides whether
    /// anything changed; its own target dir keeps the static RUSTFLAGS away from normal builds.
    /// Once built in this process, the binary is reused without asking cargo again. The target
    /// dir is the checkout's own (`target/agent-static`), not the image cache: checkouts that
    /// share one `.cache` would otherwise overwrite each other's agent between a build and its
    /// use, and an older host cannot decode a newer agent's record.
    pub fn agent_binary(&self) -> Result<PathBuf, Error> {
        const TARGET: &str = "x86_64-unknown-linux-gnu";
        static BUILT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let target_dir = self.repo.join("target/agent-static");
        let binary = target_dir.join(TARGET).join("release/mrlab-agent");
        // Held across the build: concurrent callers wait for one cargo run instead of queueing
        // on cargo's own lock one after another.
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if built.contains(&binary) {
            return Ok(binary);
        }
        // Written after each cargo run that succeeded: cargo leaves a binary it found fresh
        // untouched, so after a change to the lock file that did not concern the agent only
        // this stamp is newer than the lock file.
        let checked = target_dir.join("mrlab-agent.checked");
        let inputs =
            ["Cargo.toml", "Cargo.lock", "harness/agent/Cargo.toml"].map(|f| self.repo.join(f));
        if binary.is_file() && checked_after_its_sources(&checked, &binary, &inputs) {
            built.push(binary.clone());
            return Ok(binary);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let build = duct::cmd(
            cargo,
            [
                "build",
                "--release",
                "--quiet",
                "-p",
                "agent",
                "--bin",
                "mrlab-agent",
                "--target",
                TARGET,
            ],
        )
        .dir(&self.repo)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
        let describe = format!(
            "RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR={} cargo build --release -p agent --target {TARGET}",
            target_dir.display()
        );
        run_tool(build, &describe)?;
        // Best effort: without the stamp the next run asks cargo again.
        let _ = fs::write(&checked, describe.as_bytes());
        built.push(binary.clone());
        Ok(binary)
    }

    /// The agent initramfs for kernel package `kernel_id`: an uncompressed newc cpio with
    /// `/init` = the agent, `/dev/console`, and the kernel's [`AGENT_MODULES`] (decompressed,
    /// dependencies first, listed in `/etc/mrlab/modules`). Cached under
    /// `<root>/images/initramfs-<key>/initramfs.cpio`, keyed by the kernel's locked sha256, the
    /// agent binary and the layout version; the same inputs give the same bytes.
    pub fn agent_initramfs(&self, kernel_id: &str) -> Result<PathBuf, Error> {
        let kernel = self.kernel(kernel_id)?;
        let agent_path = self.agent_binary()?;
        let agent = fs::read(&agent_path).map_err(|e| Error::Io(agent_path.clone(), e))?;

        let mut key = Sha256::new();
        key.update(INITRAMFS_FORMAT);
        key.update(&self.locked(kernel_id)?.sha256);
        key.update(Sha256::digest(&agent));
        for m in AGENT_MODULES {
            key.update(m);
        }
        let key = hex::encode(key.finalize());
        let out = self
            .root
            .join("images")
            .join(format!("initramfs-{}", &key[..16]))
            .join("initramfs.cpio");
        if out.is_file() {
            return Ok(out);
        }

        let modules = modules::resolve(&kernel.modules_dir, AGENT_MODULES)?;
        let mut archive = cpio::Archive::default();
        archive.insert(
            "init",
            cpio::Node::File {
                data: agent,
                executable: true,
            },
        );
        archive.insert("dev/console", cpio::Node::CharDevice { major: 5, minor: 1 });
        for dir in ["proc", "sys", "tmp"] {
            archive.insert(dir, cpio::Node::Dir);
        }
        let mut list = String::new();
        for m in modules {
            let path = format!("lib/modules/{}/{}", kernel.release, m.rel_path);
            list.push_str(&format!("/{path}\n"));
            archive.insert(
                &path,
                cpio::Node::File {
                    data: m.data,
                    executable: false,
                },
            );
        }
        archive.insert(
            AGENT_MODULE_LIST,
            cpio::Node::File {
                data: list.into_bytes(),
                executable: false,
            },
        );
        write_atomically(&out, &archive.to_bytes())?;
        Ok(out)
    }
}

/// A fresh name beside `path` for building it before an atomic rename; unique across processes
/// and threads, so concurrent builds of the same image do not trample each other.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    path.with_file_name(format!(
        ".{}.tmp.{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// Writes `data` to `path` through a temporary sibling and a rename, so a concurrent reader
/// sees either nothing or the whole file.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_owned(), e))?;
    let tmp = temp_sibling(path);
    fs::write(&tmp, data).map_err(|e| Error::Io(tmp.clone(), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::Io(path.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn dep_info_lists_the_first_rule_with_escaped_spaces() {
        // As cargo writes it for the agent (one rule, then an empty rule per prerequisite).
        let dep_info = "/t/release/mrlab-agent: /r/harness/agent/src/lib.rs /r/my\\ dir/main.rs\n\n/r/harness/agent/src/lib.rs:\n";
        assert_eq!(
            dep_info_sources(dep_info),
            Some(vec![
                "/r/harness/agent/src/lib.rs".to_string(),
                "/r/my dir/main.rs".to_string()
            ])
        );
        assert_eq!(dep_info_sources("no rule here"), None);
    }

    #[test]
    fn a_source_changed_after_the_last_check_means_cargo_decides() {
        let dir = tempfile::tempdir().unwrap();
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
        let touch = |name: &str, secs: u64| {
            let path = dir.path().join(name);
            let file = fs::File::create(&path).unwrap();
            file.set_modified(at(secs)).unwrap();
            path
        };
        let source = touch("main.rs", 10);
        let inputs = [touch("Cargo.lock", 10)];
        let binary = touch("mrlab-agent", 20);
        fs::write(
            binary.with_extension("d"),
            format!("{}: {}\n", binary.display(), source.display()),
        )
        .unwrap();
        let checked = touch("mrlab-agent.checked", 30);
        assert!(checked_after_its_sources(&checked, &binary, &inputs));

        // An edit after the check, to a source or to the lock file: ask cargo.
        touch("main.rs", 40);
        assert!(!checked_after_its_sources(&checked, &binary, &inputs));
        touch("main.rs", 10);
        touch("Cargo.lock", 40);
        assert!(!checked_after_its_sources(&checked, &binary, &inputs));
        touch("Cargo.lock", 10);
        // No stamp, or a source that is gone: ask cargo.
        fs::remove_file(&source).unwrap();
        assert!(!checked_after_its_sources(&checked, &binary, &inputs));
        touch("main.rs", 10);
        fs::remove_file(&checked).unwrap();
        assert!(!checked_after_its_sources(&checked, &binary, &inputs));
    }
}
