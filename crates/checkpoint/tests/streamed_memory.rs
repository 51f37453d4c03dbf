//! A streamed save and a verify hold no copy of the state they write or read: saving a 16 MiB
//! operator state produced piece by piece, letting retention verify it, and verifying it again
//! grows the process's peak RSS (`VmHWM` of `/proc/self/status`, which only grows) by far less
//! than the state. Saving it from a buffer and then encoding the whole file, as saves did, held
//! the state twice; a verify that read and decoded the payload held it twice more.
//!
//! Alone in its test binary, so that no other test's memory is counted. Linux only (`/proc`).

use std::io::{self, Write};

use dataflow_checkpoint::{
    CheckpointId, CheckpointStorage, LocalStorage, StateWriter, StreamedCheckpoint,
    StreamedOperator,
};

const STATE_BYTES: u64 = 16 << 20;
/// What the save and the verifies may add to the peak: their buffers, with room for the
/// allocator and the test harness, far below one copy of the state.
const BOUND_KIB: u64 = 8 * 1024;

/// A state of `STATE_BYTES` bytes made up as it is written, never held.
struct Generated;

impl StateWriter for Generated {
    fn state_len(&self) -> u64 {
        STATE_BYTES
    }

    fn write_state(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut piece = [0u8; 4096];
        let mut written = 0u64;
        while written < STATE_BYTES {
            for (i, byte) in piece.iter_mut().enumerate() {
                *byte = ((written + i as u64) % 251) as u8;
            }
            out.write_all(&piece)?;
            written += piece.len() as u64;
        }
        Ok(())
    }
}

fn high_water_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("a VmHWM line")
}

#[test]
fn a_streamed_save_and_its_verifies_hold_no_copy_of_the_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(dir.path(), 2).expect("storage");
    let checkpoint = |id| StreamedCheckpoint {
        id: CheckpointId(id),
        created_at_ms: 1_700_000_000_000,
        pipeline_fingerprint: "ab12".to_string(),
        sources: Vec::new(),
        operators: vec![StreamedOperator {
            name: "steps[1].window".to_string(),
            kind: "window".to_string(),
            key_count: 1_000_000,
            state: Box::new(Generated),
        }],
        watermark: 0,
    };
    let before = high_water_kib();
    // Three saves: each one's retention verifies the kept ones, and deletes the oldest.
    for id in 1..=3 {
        let manifest = storage.save_streamed(&checkpoint(id), None).expect("saved");
        assert_eq!(manifest.operators[0].bytes, STATE_BYTES);
    }
    let manifest = storage.verify(CheckpointId(3)).expect("verified");
    assert_eq!(manifest.operators[0].key_count, 1_000_000);
    let ids: Vec<u64> = storage
        .list()
        .expect("listed")
        .iter()
        .map(|entry| entry.id.0)
        .collect();
    assert_eq!(ids, [2, 3]);
    let grown = high_water_kib().saturating_sub(before);
    assert!(
        grown < BOUND_KIB,
        "the peak RSS grew by {grown} KiB saving and verifying a {} KiB state (bound {BOUND_KIB} KiB)",
        STATE_BYTES / 1024
    );
}
