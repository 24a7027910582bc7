//! Human-readable descriptions of well-known event data.
