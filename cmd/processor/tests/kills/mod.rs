//! Seeded randomness for the crash tests: splitmix64, a small deterministic generator, and the
//! instants at which they SIGKILL a run. Each test crate uses a part of it.
#![allow(dead_code)]

use std::time::Duration;

/// splitmix64.
pub struct Mix(pub u64);

impl Mix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `count` delays from `seed`, each from `min_ms` to below `min_ms + spread_ms`.
pub fn delays(seed: u64, count: usize, min_ms: u64, spread_ms: u64) -> Vec<Duration> {
    let mut mix = Mix(seed);
    (0..count)
        .map(|_| Duration::from_millis(min_ms + mix.next() % spread_ms))
        .collect()
}

/// Lets `child` run for `delay`, then SIGKILLs it if it is still running: a kill at an
/// arbitrary instant, not at a signal (the point of a crash test). Returns `None` if it was
/// killed, or how it ended before the instant.
pub fn kill_after(
    mut child: std::process::Child,
    delay: Duration,
) -> Option<std::process::ExitStatus> {
    std::thread::sleep(delay);
    let ended = child.try_wait().expect("poll child");
    if ended.is_none() {
        child.kill().expect("SIGKILL");
    }
    let _ = child.wait();
    ended
}

/// Starts runs with `start` and SIGKILLs each at a seeded instant 30 to 300 ms in, until
/// `wanted` were killed mid-run or 3 × `wanted` runs were tried (a run that ends before its
/// instant does not count: each restart resumes from the last checkpoint, so the input may run
/// out first). Returns how many were killed.
pub fn kill_mid_run(
    mut start: impl FnMut() -> std::process::Child,
    seed: u64,
    wanted: usize,
) -> usize {
    let mut mix = Mix(seed);
    let mut kills = 0;
    for _ in 0..3 * wanted {
        if kills == wanted {
            break;
        }
        let delay = Duration::from_millis(30 + mix.next() % 270);
        if kill_after(start(), delay).is_none() {
            kills += 1;
        }
    }
    kills
}
