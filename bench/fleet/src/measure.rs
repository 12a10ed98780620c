//! Counters read around a tick: process CPU, Redis command and CPU statistics, simulator request counts.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// User plus system CPU of a process so far, in clock ticks (`None` when it is gone).
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// `utime + stime` of a `/proc/<pid>/stat` line (fields 14 and 15; the command name in parentheses may
/// hold spaces, so fields are counted after its closing parenthesis).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Calls per command from `INFO commandstats`, without `INFO` itself (the bench's own reads).
pub fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(command) = name.strip_prefix("cmdstat_") else {
            continue;
        };
        if command == "info" {
            continue;
        }
        let count = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        calls.insert(command.to_owned(), count);
    }
    calls
}

/// Redis's own CPU (user + system) in milliseconds from `INFO cpu`.
pub fn parse_redis_cpu_ms(info: &str) -> f64 {
    info.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .filter(|(name, _)| *name == "used_cpu_sys" || *name == "used_cpu_user")
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum::<f64>()
        * 1_000.0
}

/// `after - before` per key (keys only in `after` count from zero).
pub fn delta(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The simulator's counters flattened to `operation` (all statuses) and `operation:429`.
pub fn fly_counts(stats: &kiloclaw_flysim::RequestStats) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (operation, statuses) in stats {
        let total: u64 = statuses.values().sum();
        out.insert((*operation).to_owned(), total);
        if let Some(limited) = statuses.get(&429) {
            out.insert(format!("{operation}:429"), *limited);
        }
    }
    out
}

/// Sum of the counts that are not `…:429` sub-counts.
pub fn total_calls(counts: &BTreeMap<String, u64>) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| !k.ends_with(":429"))
        .map(|(_, v)| *v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (fleet bench) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn commandstats_leave_info_out() {
        let info = "# Commandstats\r\ncmdstat_get:calls=10,usec=5,usec_per_call=0.5\r\n\
                    cmdstat_info:calls=3,usec=1\r\ncmdstat_evalsha:calls=2,usec=9\r\n";
        let calls = parse_commandstats(info);
        assert_eq!(calls.get("get"), Some(&10));
        assert_eq!(calls.get("evalsha"), Some(&2));
        assert!(!calls.contains_key("info"));
        let cpu = parse_redis_cpu_ms("used_cpu_sys:1.5\r\nused_cpu_user:0.25\r\n");
        assert!((cpu - 1_750.0).abs() < 1e-6);
    }
}
