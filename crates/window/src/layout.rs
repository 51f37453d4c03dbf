//! The arithmetic of tumbling and sliding windows, which keep their state in panes.
//!
//! A window `[s, s + size)` starts at every multiple `s` of `slide`. Both `size` and `slide` are
//! multiples of the pane length `gcd(size, slide)`, so every window is an exact union of panes
//! `[p, p + pane)` aligned to multiples of `pane`: an event updates only its own pane, and a
//! window's result is the merge of its panes. Tumbling windows are the case `slide == size`,
//! where a window is a single pane.
//!
//! Placing an event checks that all its windows fit in `i64`; slices in the state were placed
//! (or checked on restore), so arithmetic on their starts cannot overflow. It saturates anyway,
//! so that no input can make it panic.

/// Window and pane lengths of a tumbling or sliding window kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PaneLayout {
    // Invariant: 0 < pane <= slide <= size, and pane divides both slide and size.
    size: i64,
    slide: i64,
    pane: i64,
}

/// Where an event falls: its pane and the starts of the windows that contain it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The start of the event's pane.
    pub(crate) pane_start: i64,
    /// The start of the earliest window that contains the event.
    pub(crate) first_start: i64,
    /// The start of the latest window that contains the event; `last_start + size` fits in
    /// `i64`.
    pub(crate) last_start: i64,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl PaneLayout {
    /// The layout of windows of `size` every `slide`; both must be positive, with
    /// `slide <= size` (see [`crate::WindowConfig::validate`]).
    pub(crate) fn new(size: i64, slide: i64) -> PaneLayout {
        PaneLayout {
            size,
            slide,
            pane: gcd(size, slide),
        }
    }

    /// The pane length.
    pub(crate) fn pane(self) -> i64 {
        self.pane
    }

    /// The window length.
    pub(crate) fn size(self) -> i64 {
        self.size
    }

    /// The distance between window starts.
    pub(crate) fn slide(self) -> i64 {
        self.slide
    }

    /// Where an event at `timestamp` falls, or `None` if one of its windows does not fit in
    /// `i64`.
    pub(crate) fn place(self, timestamp: i64) -> Option<Placement> {
        let pane_start = timestamp.checked_sub(timestamp.rem_euclid(self.pane))?;
        if self.pane == self.size {
            // Tumbling: the pane is the only window.
            pane_start.checked_add(self.size)?;
            return Some(Placement {
                pane_start,
                first_start: pane_start,
                last_start: pane_start,
            });
        }
        let last_start = pane_start.checked_sub(pane_start.rem_euclid(self.slide))?;
        last_start.checked_add(self.size)?;
        // The smallest multiple of slide with start + size >= pane_start + pane; the sum is at
        // most the last window's end, which fits.
        let lowest = (pane_start + self.pane).checked_sub(self.size)?;
        let first_start =
            lowest.checked_add((self.slide - lowest.rem_euclid(self.slide)) % self.slide)?;
        Some(Placement {
            pane_start,
            first_start,
            last_start,
        })
    }

    /// The start of the earliest window containing the pane at `pane_start`.
    fn first_start(self, pane_start: i64) -> i64 {
        let lowest = pane_start
            .saturating_add(self.pane)
            .saturating_sub(self.size);
        lowest.saturating_add((self.slide - lowest.rem_euclid(self.slide)) % self.slide)
    }

    /// The end of the latest window containing the pane at `pane_start`.
    fn last_end(self, pane_start: i64) -> i64 {
        pane_start
            .saturating_sub(pane_start.rem_euclid(self.slide))
            .saturating_add(self.size)
    }

    /// The watermark at which the pane at `pane_start` can be dropped: when the latest window
    /// containing it is purged. Saturates at `i64::MAX`.
    pub(crate) fn purge_time(self, pane_start: i64, lateness: i64) -> i64 {
        self.last_end(pane_start).saturating_add(lateness)
    }

    /// The earliest window that contains the pane at `pane_start` and ends after `bound`, as
    /// `(start, end)`.
    pub(crate) fn next_window_of_pane(self, pane_start: i64, bound: i64) -> Option<(i64, i64)> {
        if self.last_end(pane_start) <= bound {
            return None;
        }
        let first = self.first_start(pane_start);
        let start = if bound < first.saturating_add(self.size) {
            first
        } else {
            // The smallest multiple of slide whose window ends after bound. It is at most the
            // pane's last window start (whose window ends after bound), so it fits.
            let lowest = bound.saturating_sub(self.size);
            lowest
                .saturating_sub(lowest.rem_euclid(self.slide))
                .saturating_add(self.slide)
        };
        Some((start, start.saturating_add(self.size)))
    }

    /// The earliest window that ends after `bound` and contains one of the `pane_count` panes
    /// whose starts `pane_start` gives in ascending order, found by binary search.
    pub(crate) fn next_window(
        self,
        pane_count: usize,
        pane_start: impl Fn(usize) -> i64,
        bound: i64,
    ) -> Option<(i64, i64)> {
        // Latest window ends grow with the pane start, so the panes whose windows all end by
        // `bound` form a prefix; the first pane after it gives the earliest window.
        let (mut low, mut high) = (0, pane_count);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.last_end(pane_start(middle)) <= bound {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        if low == pane_count {
            return None;
        }
        self.next_window_of_pane(pane_start(low), bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panes_are_the_gcd() {
        assert_eq!(PaneLayout::new(10, 10).pane(), 10);
        assert_eq!(PaneLayout::new(10, 4).pane(), 2);
        assert_eq!(PaneLayout::new(9, 3).pane(), 3);
    }

    #[test]
    fn placement_handles_negative_times() {
        let tumbling = PaneLayout::new(10, 10);
        let placement = tumbling.place(-1).expect("fits");
        assert_eq!(
            placement,
            Placement {
                pane_start: -10,
                first_start: -10,
                last_start: -10
            }
        );
        let sliding = PaneLayout::new(10, 4);
        // Windows containing 1: starts -8, -4, 0.
        let placement = sliding.place(1).expect("fits");
        assert_eq!(
            placement,
            Placement {
                pane_start: 0,
                first_start: -8,
                last_start: 0
            }
        );
        // Windows containing 2: starts -4, 0 ([-8, 2) ends before it).
        assert_eq!(sliding.place(2).expect("fits").first_start, -4);
        assert_eq!(sliding.place(-3).expect("fits").pane_start, -4);
    }

    #[test]
    fn placement_refuses_unrepresentable_windows() {
        let layout = PaneLayout::new(10, 3);
        assert_eq!(layout.place(i64::MIN), None);
        assert_eq!(layout.place(i64::MAX), None);
        assert!(layout.place(0).is_some());
    }

    #[test]
    fn next_window_skips_windows_without_panes() {
        let layout = PaneLayout::new(10, 4);
        let panes = [0, 40];
        let next = |bound| layout.next_window(panes.len(), |i| panes[i], bound);
        assert_eq!(next(i64::MIN), Some((-8, 2)));
        assert_eq!(next(2), Some((-4, 6)));
        assert_eq!(next(10), Some((32, 42)));
        assert_eq!(next(50), None);
        assert_eq!(layout.purge_time(40, 5), 55);
        assert_eq!(layout.purge_time(i64::MAX - 20, 100), i64::MAX);
    }

    #[test]
    fn arithmetic_matches_brute_force() {
        for size in 1..=8 {
            for slide in 1..=size {
                let layout = PaneLayout::new(size, slide);
                let pane = layout.pane();
                let starts = |t: i64| {
                    (-60..=60).filter(move |s: &i64| s % slide == 0 && *s <= t && t < s + size)
                };
                for t in -30..30 {
                    let placement = layout.place(t).expect("fits");
                    assert_eq!(placement.pane_start, t.div_euclid(pane) * pane);
                    assert_eq!(
                        Some(placement.first_start),
                        starts(t).min(),
                        "{size}/{slide} at {t}"
                    );
                    assert_eq!(
                        Some(placement.last_start),
                        starts(t).max(),
                        "{size}/{slide} at {t}"
                    );
                    let pane_start = placement.pane_start;
                    for bound in -40..40 {
                        let expected = starts(pane_start)
                            .find(|s| s + size > bound)
                            .map(|s| (s, s + size));
                        assert_eq!(
                            layout.next_window_of_pane(pane_start, bound),
                            expected,
                            "{size}/{slide} pane {pane_start} after {bound}"
                        );
                    }
                }
            }
        }
    }
}
