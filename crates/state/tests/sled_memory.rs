//! Writing many small entries into a sled store keeps the process's memory to what sled holds
//! per entry: 100,000 entries (a restore of 100,000 keys writes as many) grow the peak RSS
//! (`VmHWM` of `/proc/self/status`, which only grows) by well under a bound. In this debug
//! build, written as `sled::Batch`es of 1,024 they grew it by 140 MiB (sled 0.34 holds far more
//! for batches), one insert at a time by 29 MiB.
//!
//! Alone in its test binary, so that no other test's memory is counted. Linux only (`/proc`).

use dataflow_state::{SledStore, StateSnapshot, StateStore};

const ENTRIES: u32 = 100_000;
const BOUND_KIB: u64 = 64 * 1024;

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
fn many_small_entries_written_into_sled_stay_under_a_memory_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store =
        SledStore::rebuild(&dir.path().join("state"), &StateSnapshot::default()).expect("store");
    let before = high_water_kib();
    // Keys and values shaped like a window's: a small encoded key, about 30 bytes of state.
    let mut batch = Vec::with_capacity(16_384);
    for i in 0..ENTRIES {
        let key = i.wrapping_mul(2_654_435_761).to_le_bytes().to_vec();
        batch.push((key, [i.to_le_bytes(), [7; 4]].concat().repeat(4)));
        if batch.len() == batch.capacity() {
            store.put_batch("steps[1].window", &batch).expect("written");
            batch.clear();
        }
    }
    store.put_batch("steps[1].window", &batch).expect("written");
    store.flush().expect("flushed");
    assert_eq!(
        store.key_count("steps[1].window").expect("counted"),
        u64::from(ENTRIES)
    );
    let grown = high_water_kib().saturating_sub(before);
    assert!(
        grown < BOUND_KIB,
        "the peak RSS grew by {grown} KiB writing {ENTRIES} entries (bound {BOUND_KIB} KiB)"
    );
}
