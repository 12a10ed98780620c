//! A seeded generator for the proofs (races, crash points, chaos, linearizability): a run's choices
//! replay from its printed seed alone.

/// SplitMix64: tiny, fast, and good enough to pick workloads; not for anything secret.
#[derive(Debug, Clone)]
pub struct SeededRng(pub u64);

impl SeededRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`0` for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A generator for a sub-task, independent of this one's later draws.
    pub fn fork(&mut self, salt: u64) -> SeededRng {
        SeededRng(self.next_u64() ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }
}

/// A seed as people write it: decimal, or hexadecimal with `0x`.
pub fn parse_seed(text: &str) -> Result<u64, std::num::ParseIntError> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
}

/// A seed from the clock and the process id, for runs that were not given one.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    SeededRng(nanos ^ u64::from(std::process::id())).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_parses_in_both_spellings() {
        let (mut a, mut b) = (SeededRng(7), SeededRng(7));
        let draws: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(draws, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        // SplitMix64's published first output for seed 0.
        assert_eq!(SeededRng(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(parse_seed("0x1352909"), Ok(0x1352909));
        assert_eq!(parse_seed(" 42 "), Ok(42));
        assert!(parse_seed("0xzz").is_err());
        assert!(SeededRng(1).below(5) < 5);
        assert_eq!(SeededRng(1).below(0), 0);
    }
}
