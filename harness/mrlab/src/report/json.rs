//! The JSON report: every scenario's [`ScenarioReport`] under `scenarios`.

use super::ScenarioReport;
use serde::Serialize;

#[derive(Serialize)]
pub struct Report<'a> {
    pub scenarios: &'a [ScenarioReport],
}

pub fn json(reports: &[ScenarioReport]) -> String {
    serde_json::to_string_pretty(&Report { scenarios: reports }).expect("report serializes")
}
