//! The YAML config loader and checker: parsing and planning any text must never panic; it
//! ends in a plan or in problems, each with its place.
#![no_main]

use std::path::Path;

use dataflow_pipeline::PipelineError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A config is read as UTF-8 text (`load` refuses other bytes before parsing).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative paths are taken from a directory that does not exist: validation opens nothing.
    let base = Path::new("fuzz-config-base-does-not-exist");
    match dataflow_pipeline::config::parse_and_plan(text, base) {
        Ok(_) => {}
        Err(PipelineError::InvalidConfig(problems)) => {
            assert!(!problems.is_empty(), "an invalid config without a problem");
            for problem in &problems {
                assert!(!problem.message.is_empty(), "a problem without a message");
            }
        }
        Err(error) => assert!(!error.to_string().is_empty(), "an error without a message"),
    }
});
