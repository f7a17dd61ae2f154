//! What a process has used so far, read from `/proc`: its CPU time and its
//! threads' context switches (a steadier measure of thread hand-offs than
//! time on a shared machine). Shared by the benches that report per-request
//! figures; included with `#[path = ".../support/process.rs"] mod process;`.
#![allow(dead_code)]

use std::time::Duration;

/// User plus system CPU time of `pid`, all threads.
pub fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 12th and 13th, in clock ticks (100 per second here).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Context switches summed over the threads a process has now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Switches {
    pub voluntary: u64,
    pub involuntary: u64,
}

impl Switches {
    pub fn total(self) -> u64 {
        self.voluntary + self.involuntary
    }
}

pub fn context_switches(pid: u32) -> Switches {
    let mut switches = Switches::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return switches;
    };
    for status in tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
    {
        for line in status.lines() {
            let count = || line.split_whitespace().nth(1)?.parse::<u64>().ok();
            if line.starts_with("voluntary_ctxt_switches:") {
                switches.voluntary += count().unwrap_or(0);
            } else if line.starts_with("nonvoluntary_ctxt_switches:") {
                switches.involuntary += count().unwrap_or(0);
            }
        }
    }
    switches
}
