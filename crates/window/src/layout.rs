//! The arithmetic of tumbling and sliding windows, which keep their state in panes.
//!
//! A window `[s, s + size)` starts at every multiple `s` of `slide`. Both `size` and `slide` are
//! multiples of the pane length `gcd(size, slide)`, so every window is an exact union of panes
//! `[p, p + pane)` aligned to multiples of `pane`: an event updates only its own pane, and a
//! window's result is the merge of its panes. Tumbling windows are the case `slide == size`,
//! where a window is a single pane.
//!
//! Computations that involve a watermark or lateness are done in `i128`, so that they cannot
//! overflow whatever the watermark is.

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

/// Converts back to `i64`, saturating; callers only convert values that fit by construction.
fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
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
        let first_start = i64::try_from(self.first_start(pane_start)).ok()?;
        let last_start = i64::try_from(self.last_start(pane_start)).ok()?;
        last_start.checked_add(self.size)?;
        Some(Placement {
            pane_start,
            first_start,
            last_start,
        })
    }

    /// The start of the earliest window containing the pane at `pane_start`: the smallest
    /// multiple of `slide` with `start + size >= pane_start + pane`.
    fn first_start(self, pane_start: i64) -> i128 {
        let lowest = i128::from(pane_start) + i128::from(self.pane) - i128::from(self.size);
        let slide = i128::from(self.slide);
        -(-lowest).div_euclid(slide) * slide
    }

    /// The start of the latest window containing the pane at `pane_start`.
    fn last_start(self, pane_start: i64) -> i128 {
        let slide = i128::from(self.slide);
        i128::from(pane_start).div_euclid(slide) * slide
    }

    /// The end of the latest window containing the pane at `pane_start`.
    fn last_end(self, pane_start: i64) -> i128 {
        self.last_start(pane_start) + i128::from(self.size)
    }

    /// The watermark at which the pane at `pane_start` can be dropped: when the latest window
    /// containing it is purged. Saturates at `i64::MAX`.
    pub(crate) fn purge_time(self, pane_start: i64, lateness: i64) -> i64 {
        saturate(self.last_end(pane_start) + i128::from(lateness))
    }

    /// The earliest window that contains the pane at `pane_start` and ends after `bound`, as
    /// `(start, end)`.
    pub(crate) fn next_window_of_pane(self, pane_start: i64, bound: i64) -> Option<(i64, i64)> {
        if self.last_end(pane_start) <= i128::from(bound) {
            return None;
        }
        // The smallest multiple of slide whose window ends after bound.
        let slide = i128::from(self.slide);
        let ending_after =
            (i128::from(bound) - i128::from(self.size)).div_euclid(slide) * slide + slide;
        // Between the pane's first and last window starts, so it fits in i64.
        let start = saturate(ending_after.max(self.first_start(pane_start)));
        Some((start, saturate(i128::from(start) + i128::from(self.size))))
    }

    /// The earliest window that ends after `bound` and contains one of the panes starting at
    /// the `pane_count` panes whose starts `pane_start` gives in ascending order, found by binary
    /// search.
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
            if self.last_end(pane_start(middle)) <= i128::from(bound) {
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
}
