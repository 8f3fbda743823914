//! CPU accounting for the capacity model (docs/CAPACITY.md): the CPU time (user + system,
//! from `/proc/<pid>/stat`, Linux) that named server processes — and the Postgres
//! backends of one database — spent during a scenario's measured window, per request.
//! Load generation itself is not in it: only the processes named here are counted.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::Args;

/// `/proc` reports CPU time in clock ticks of USER_HZ, 100 on every Linux platform
/// (the kernel converts whatever its internal HZ is).
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Args, Clone, Default)]
pub struct CpuArgs {
    /// A process whose CPU time is accounted per request, `name=pid` (repeatable), e.g.
    /// `--cpu api=1234`.
    #[arg(long = "cpu", value_parser = parse_named_pid)]
    cpu: Vec<(String, u32)>,
    /// Account the Postgres backends of this database (processes titled
    /// `postgres: USER DATABASE …`) as `pg`.
    #[arg(long)]
    cpu_pg_db: Option<String>,
}

fn parse_named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected name=pid"))?;
    let pid = pid.parse().map_err(|e| format!("`{s}`: {e}"))?;
    Ok((name.to_owned(), pid))
}

/// Ticks per process, by group (each `--cpu` name, and `pg`).
pub struct Sample(BTreeMap<String, BTreeMap<u32, u64>>);

/// utime + stime of a process; None once it is gone.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line are the 12th and 13th after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The pids of the backends serving `db` now: titled `postgres: [CLUSTER: ]USER DB …`
/// (Debian names the cluster, e.g. `15/main:`).
fn backends(db: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let title = String::from_utf8_lossy(&cmdline);
        let mut words = title
            .strip_prefix("postgres: ")?
            .split_whitespace()
            .peekable();
        if words.peek()?.ends_with(':') {
            words.next();
        }
        (words.nth(1)? == db).then_some(pid)
    })
    .collect()
}

impl CpuArgs {
    fn enabled(&self) -> bool {
        !self.cpu.is_empty() || self.cpu_pg_db.is_some()
    }

    pub fn sample(&self) -> Sample {
        let mut groups = BTreeMap::new();
        for (name, pid) in &self.cpu {
            let g: &mut BTreeMap<u32, u64> = groups.entry(name.clone()).or_default();
            g.insert(*pid, ticks(*pid).unwrap_or(0));
        }
        if let Some(db) = &self.cpu_pg_db {
            let g: &mut BTreeMap<u32, u64> = groups.entry("pg".to_owned()).or_default();
            for pid in backends(db) {
                if let Some(t) = ticks(pid) {
                    g.insert(pid, t);
                }
            }
        }
        Sample(groups)
    }

    /// ` cpu_ms_per_req_NAME=… … cpu_ms_per_req=…` (the sum) for `requests` between the
    /// samples, to append to a RESULT line; empty when nothing is accounted. A backend
    /// that started inside the window counts from zero.
    pub fn per_request(&self, start: &Sample, end: &Sample, requests: u64) -> String {
        if !self.enabled() || requests == 0 {
            return String::new();
        }
        let mut out = String::new();
        let mut total = 0.0;
        for (group, pids) in &end.0 {
            let before = start.0.get(group);
            let used: u64 = pids
                .iter()
                .map(|(pid, t)| {
                    t.saturating_sub(before.and_then(|b| b.get(pid)).copied().unwrap_or(0))
                })
                .sum();
            let ms = used as f64 / TICKS_PER_SEC * 1000.0 / requests as f64;
            total += ms;
            let _ = write!(out, " cpu_ms_per_req_{group}={ms:.3}");
        }
        let _ = write!(out, " cpu_ms_per_req={total:.3}");
        out
    }
}
