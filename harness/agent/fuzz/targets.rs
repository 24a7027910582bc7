//! The body of the agent fuzz target, shared by the cargo-fuzz binary (`fuzz_targets/`) and the
//! stable mutation test (`harness/mrlab/tests/fuzz_targets.rs`): any serial bytes give a
//! record or an error, never a panic; a record that decodes encodes and decodes to itself.

pub fn record(serial: &[u8]) {
    if let Ok(record) = agent::record::decode(serial) {
        let _ = record.errors();
        let again = agent::record::decode(agent::record::encode(&record).as_bytes());
        assert!(again.is_ok_and(|again| again.entries == record.entries));
    }
}
