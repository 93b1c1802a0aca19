//! Per-sender sequence tracking: duplicates and reordering.

/// Largest sequence number tracked; larger ones are refused (the bitmap stays bounded).
pub const MAX_SEQ: u64 = 1 << 28;

/// What one arrival was, relative to the ones before it from the same sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First arrival of this number, and no higher number has arrived yet.
    InOrder,
    /// First arrival of this number, but a higher number arrived before it.
    Reordered,
    /// This number has arrived before.
    Duplicate,
    /// Beyond [`MAX_SEQ`]: not tracked.
    OutOfRange,
}

/// Seen-set (a bitmap) and high-water mark of one sender's sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    seen: Vec<u64>,
    highest: Option<u64>,
}

impl SeqTracker {
    /// The highest number seen so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= MAX_SEQ {
            return Arrival::OutOfRange;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        match self.highest {
            Some(h) if seq < h => Arrival::Reordered,
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut t = SeqTracker::default();
        assert!((0..200).all(|s| t.observe(s) == Arrival::InOrder));
    }

    #[test]
    fn gaps_are_not_reordering_but_late_arrivals_are() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Arrival::InOrder);
        assert_eq!(t.observe(5), Arrival::InOrder);
        assert_eq!(t.observe(3), Arrival::Reordered);
        assert_eq!(t.observe(6), Arrival::InOrder);
        assert_eq!(t.observe(4), Arrival::Reordered);
    }

    #[test]
    fn duplicates_are_caught_in_or_out_of_order() {
        let mut t = SeqTracker::default();
        t.observe(1);
        t.observe(130);
        assert_eq!(t.observe(1), Arrival::Duplicate);
        assert_eq!(t.observe(130), Arrival::Duplicate);
        assert_eq!(t.observe(64), Arrival::Reordered);
        assert_eq!(t.observe(64), Arrival::Duplicate);
    }

    #[test]
    fn huge_numbers_are_refused() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(MAX_SEQ), Arrival::OutOfRange);
        assert!(t.seen.is_empty());
    }
}
