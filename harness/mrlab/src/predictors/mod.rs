//! External predictors: other implementations of the TD prediction, run beside the builtin one
//! and judged against the same reference, so a TDX host can check the library its users ship.
//!
//! - [`contract`]: what a predictor is given (`inputs.json`) and must print;
//! - [`exec`]: running one in its own process group, with a time limit;
//! - [`dstack`]: the adapter that maps a VM onto `dstack-mr measure` flags;
//! - here: parsing `--predictor`, comparing each result with the reference.
//!
//! # The reference
//!
//! On a TD, the registers it reported. On the vtpm backend there are no RTMRs: the reference is
//! the builtin TD prediction of the same VM, whose TDX-relevant events the vTPM run checks
//! against the real firmware; reports label it `builtin (vtpm-verified)`.

pub mod contract;
pub mod dstack;
pub mod exec;

use crate::prepare::{builtin_registers, Prepared};
use crate::report::predictors::{PredictorReport, RegisterRow, Status};
use crate::resolve::Resolved;
use exec::predict;
use std::collections::BTreeMap;

use measure::tdvf::PageOrder;
use measure::{Register, Registers};

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One external predictor, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predictor {
    pub name: String,
    pub kind: Kind,
}

/// The kinds of external predictor, the one registry of them: each kind's `--predictor` form
/// ([`Kind::parse`]), its name in reports ([`Kind::name`]) and how it runs ([`Kind::predict`]).
/// A kind that needs an adapter is a module beside `dstack.rs` plus its variant here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A shell command that reads `inputs.json` (its last argument) and prints the registers.
    Command { command: String },
    /// The `dstack-mr` CLI at this path.
    DstackMr { path: PathBuf },
}

impl Kind {
    /// The kind of `--predictor NAME=REST`: `dstack-mr=PATH` is the adapter, any other name a
    /// command.
    fn parse(name: &str, rest: &str) -> Kind {
        match name {
            "dstack-mr" => Kind::DstackMr {
                path: PathBuf::from(rest),
            },
            _ => Kind::Command {
                command: rest.to_string(),
            },
        }
    }

    /// The kind as reports name it.
    fn name(&self) -> &'static str {
        match self {
            Kind::Command { .. } => "command",
            Kind::DstackMr { .. } => "dstack-mr",
        }
    }

    /// Run a predictor of this kind, named `name`, in `dir` on the VM of `resolved` (`oracle`:
    /// its fw_cfg dump).
    async fn predict(
        &self,
        name: &str,
        resolved: &Resolved,
        oracle: &BTreeMap<String, Vec<u8>>,
        order: PageOrder,
        dir: &Path,
    ) -> Prediction {
        match self {
            Kind::Command { command } => {
                contract::predict(command, name, resolved, order, dir).await
            }
            Kind::DstackMr { path } => dstack::predict(path, resolved, oracle, order, dir).await,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("--predictor {0:?}: expected NAME=COMMAND or dstack-mr=PATH")]
    NoEquals(String),
    #[error(
        "--predictor {0:?}: NAME must be letters, digits, `.`, `_` or `-` (it names a folder)"
    )]
    BadName(String),
    #[error("--predictor {0:?}: `builtin` is the harness's own prediction; pick another name")]
    Reserved(String),
    #[error("--predictor {0:?}: empty command")]
    EmptyCommand(String),
}

/// Why a predictor produced no registers: its folder, its process or its output. A report
/// shows it as [`Prediction::Error`]'s text ([`crate::error::chain`]).
#[derive(Debug, thiserror::Error)]
pub enum PredictorError {
    #[error("--predictor {0}: given twice")]
    GivenTwice(String),
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {}", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for {}", .program.display())]
    Wait {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {} s", .0.as_secs())]
    Timeout(std::time::Duration),
    /// `stderr_tail`: the last lines of its stderr, joined by ` | `, or empty.
    #[error("exited with {status}{}", if .stderr_tail.is_empty() { String::new() } else { format!(": {}", .stderr_tail) })]
    Exited {
        status: std::process::ExitStatus,
        stderr_tail: String,
    },
    #[error("stdout is not a JSON object")]
    NotJson(#[source] serde_json::Error),
    #[error("`{name}` is {value}, expected a hex string")]
    NotAString { name: String, value: String },
    #[error("`{name}`: not hex")]
    NotHex {
        name: String,
        #[source]
        source: hex::FromHexError,
    },
    #[error("`{name}`: {len} bytes, expected 48 (SHA-384)")]
    Length { name: String, len: usize },
    #[error("stdout has no `{0}` (expected {{\"mrtd\",\"rtmr0\",\"rtmr1\",\"rtmr2\"}})")]
    Missing(String),
    #[error("the fw_cfg oracle served no etc/acpi/tables")]
    NoAcpiTables,
}

impl PredictorError {
    /// An io error of `path`.
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PredictorError + '_ {
        move |source| PredictorError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl From<PredictorError> for Prediction {
    fn from(e: PredictorError) -> Prediction {
        Prediction::Error(crate::error::chain(&e))
    }
}

impl FromStr for Predictor {
    type Err = ParseError;

    fn from_str(arg: &str) -> Result<Predictor, ParseError> {
        let (name, rest) = arg
            .split_once('=')
            .ok_or_else(|| ParseError::NoEquals(arg.into()))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || name.starts_with('.')
        {
            return Err(ParseError::BadName(arg.into()));
        }
        if name == "builtin" {
            return Err(ParseError::Reserved(arg.into()));
        }
        if rest.trim().is_empty() {
            return Err(ParseError::EmptyCommand(arg.into()));
        }
        Ok(Predictor {
            name: name.to_string(),
            kind: Kind::parse(name, rest),
        })
    }
}

/// Names must be unique: each predictor gets its own folder and report row.
pub fn check_unique(predictors: &[Predictor]) -> Result<(), PredictorError> {
    for (i, p) in predictors.iter().enumerate() {
        if predictors[..i].iter().any(|q| q.name == p.name) {
            return Err(PredictorError::GivenTwice(p.name.clone()));
        }
    }
    Ok(())
}

/// What a predictor produced for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// Registers; `unsupported` lists registers the predictor cannot model for this VM, why.
    Registers {
        registers: Box<Registers>,
        unsupported: Vec<(&'static str, String)>,
    },
    /// The predictor cannot express this VM at all.
    Unsupported(String),
    Error(String),
}

/// Compare a predictor's result with the reference.
pub fn compare(
    predictor: &Predictor,
    prediction: Prediction,
    reference: &Registers,
    reference_label: &str,
) -> PredictorReport {
    let mut report = errored(predictor, String::new(), reference_label);
    report.error = None;
    let (registers, unsupported) = match prediction {
        Prediction::Error(e) => return errored(predictor, e, reference_label),
        Prediction::Unsupported(why) => {
            report.status = Status::Unsupported;
            report.unsupported = Some(why);
            return report;
        }
        Prediction::Registers {
            registers,
            unsupported,
        } => (registers, unsupported),
    };
    for register in Register::ALL {
        let name = register.name();
        let predicted = registers.known(register);
        let expected = reference.known(register);
        // RTMR3 is optional in the contract: no row when the predictor does not give it.
        if register == Register::Rtmr3 && predicted.is_none() {
            continue;
        }
        let why = unsupported
            .iter()
            .find(|(r, _)| *r == name)
            .map(|(_, why)| why.clone());
        let matches = match (&why, predicted, expected) {
            (None, Some(p), Some(e)) => Some(p == e),
            _ => None,
        };
        report.registers.push(RegisterRow {
            name: name.into(),
            predicted: predicted.map(hex::encode),
            reference: expected.map(hex::encode),
            matches,
            unsupported: why,
        });
    }
    report.status = if report.registers.iter().any(|r| r.matches == Some(false)) {
        Status::Mismatch
    } else if report.registers.iter().all(|r| r.matches == Some(true)) {
        Status::Match
    } else {
        Status::Partial
    };
    report
}

/// The vtpm reference: each predictor against the builtin TD prediction of the scenario's VM
/// (prepared here for the TDX platform: no TPM device), working in `dir/predictors/`.
pub async fn vs_builtin(
    predictors: &[Predictor],
    scenario: &crate::scenario::Scenario,
    cache: &images::Cache,
    dir: &Path,
) -> Vec<PredictorReport> {
    const LABEL: &str = "builtin (vtpm-verified)";
    // The page order is the quirk table's for this VM's QEMU (qemu-8-tdx-two-pass-mrtd).
    let td = crate::prepare::prepare(scenario, cache, measure::Platform::Tdx)
        .await
        .and_then(|p| {
            builtin_registers(&p, p.resolved.quirks.mrtd_page_order).map(|reference| (p, reference))
        });
    match td {
        Ok((td, reference)) => {
            check_all(
                predictors,
                &td,
                td.resolved.quirks.mrtd_page_order,
                &reference,
                LABEL,
                &dir.join("predictors"),
            )
            .await
        }
        Err(e) => predictors
            .iter()
            .map(|p| {
                errored(
                    p,
                    format!("builtin TD prediction: {}", crate::error::chain(&e)),
                    LABEL,
                )
            })
            .collect(),
    }
}

/// A predictor that could not be run or compared.
pub fn errored(predictor: &Predictor, error: String, reference_label: &str) -> PredictorReport {
    PredictorReport {
        name: predictor.name.clone(),
        kind: predictor.kind.name().into(),
        reference: reference_label.into(),
        status: Status::Error,
        error: Some(error),
        unsupported: None,
        registers: Vec::new(),
    }
}

/// Run every predictor on the TD VM of `td` (each in `work/<name>/`) and compare it with
/// `reference`.
pub async fn check_all(
    predictors: &[Predictor],
    td: &Prepared,
    order: PageOrder,
    reference: &Registers,
    reference_label: &str,
    work: &Path,
) -> Vec<PredictorReport> {
    let mut out = Vec::new();
    for p in predictors {
        let prediction = predict(p, &td.resolved, &td.oracle, order, &work.join(&p.name)).await;
        out.push(compare(p, prediction, reference, reference_label));
    }
    out
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_command_and_dstack_mr_predictors() {
        assert_eq!(
            "mine=python3 predict.py --fast".parse::<Predictor>(),
            Ok(Predictor {
                name: "mine".into(),
                kind: Kind::Command {
                    command: "python3 predict.py --fast".into()
                }
            })
        );
        // `=` inside the command stays in the command.
        assert_eq!(
            "x=env A=1 ./p".parse::<Predictor>().unwrap().kind,
            Kind::Command {
                command: "env A=1 ./p".into()
            }
        );
        assert_eq!(
            "dstack-mr=/opt/bin/dstack-mr".parse::<Predictor>(),
            Ok(Predictor {
                name: "dstack-mr".into(),
                kind: Kind::DstackMr {
                    path: "/opt/bin/dstack-mr".into()
                }
            })
        );
    }

    #[test]
    fn rejects_bad_predictor_arguments() {
        type Case = (&'static str, fn(String) -> ParseError);
        let cases: [Case; 6] = [
            ("dstack-mr", ParseError::NoEquals),
            ("=cmd", ParseError::BadName),
            ("a/b=cmd", ParseError::BadName),
            ("..=cmd", ParseError::BadName),
            ("builtin=cmd", ParseError::Reserved),
            ("p=  ", ParseError::EmptyCommand),
        ];
        for (arg, error) in cases {
            assert_eq!(arg.parse::<Predictor>(), Err(error(arg.into())), "{arg}");
        }
        let twice = ["a=x".parse().unwrap(), "a=y".parse().unwrap()];
        assert_eq!(
            check_unique(&twice).unwrap_err().to_string(),
            "--predictor a: given twice"
        );
    }

    fn regs(b: u8) -> Registers {
        Registers::td([b; 48], [[b; 48]; 4]).without(Register::Rtmr3)
    }

    #[test]
    fn comparison_statuses_and_verdicts() {
        let p: Predictor = "p=x".parse().unwrap();
        let reference = regs(7);
        let mut one_off = regs(7);
        one_off.set(Register::Rtmr1, [8; 48]);
        let partial = compare(
            &p,
            Prediction::Registers {
                registers: Box::new(one_off.clone()),
                unsupported: vec![("rtmr1", "no".into())],
            },
            &reference,
            "actual",
        );
        assert_eq!(partial.status, Status::Partial);
        let wrong = compare(
            &p,
            Prediction::Registers {
                registers: Box::new(one_off),
                unsupported: Vec::new(),
            },
            &reference,
            "builtin (vtpm-verified)",
        );
        assert_eq!(wrong.status, Status::Mismatch);
        let failed = compare(&p, Prediction::Error("boom".into()), &reference, "actual");
        assert_eq!(failed.status, Status::Error);
    }
}
