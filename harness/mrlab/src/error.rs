//! Errors as text: the stages' typed errors keep their cause as `source()`, not in their own
//! message, so one line for a human is the error and its causes joined, as `mrlab`'s `main`
//! prints them (anyhow's `{:#}`).

/// `error: cause: cause's cause…`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("scenario x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_follows_once() {
        let e = Outer(std::io::Error::other("no such file"));
        assert_eq!(super::chain(&e), "scenario x: no such file");
    }
}
