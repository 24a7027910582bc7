//! The report's view of external predictors: each one's registers beside the reference.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every register matches the reference.
    Match,
    /// Every compared register matches; some were not comparable (see their `unsupported`).
    Partial,
    Mismatch,
    Unsupported,
    Error,
}

#[derive(Clone, Debug, Serialize)]
pub struct RegisterRow {
    pub name: String,
    pub predicted: Option<String>,
    pub reference: Option<String>,
    /// None when not compared (unsupported, or a side lacks the register).
    #[serde(rename = "match")]
    pub matches: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// One predictor side by side with the reference, for one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct PredictorReport {
    pub name: String,
    pub kind: String,
    /// What the predicted values are compared with: `actual (…)` or `builtin (vtpm-verified)`.
    pub reference: String,
    pub status: Status,
    pub error: Option<String>,
    pub unsupported: Option<String>,
    pub registers: Vec<RegisterRow>,
}
