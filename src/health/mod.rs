//! Health gating of a trial boot. The policy is pure: it is fed check
//! results with an explicit `now` (a monotonic reading as a `Duration`
//! since any fixed origin) and says pending / passed / failed. The runner
//! that executes the configured commands is `daemon::health`.
//!
//! Never does: files, clocks, threads, processes, network.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Shell commands; all must exit 0 for one passing round.
    #[serde(default = "default_commands")]
    pub commands: Vec<String>,
    /// Give up (and roll back) this long after the checks start.
    #[serde(default = "default_deadline")]
    pub deadline_s: u64,
    #[serde(default = "default_interval")]
    pub interval_s: u64,
    /// Consecutive passing rounds needed to commit.
    #[serde(default = "default_passes")]
    pub passes: u32,
}

fn default_commands() -> Vec<String> {
    // agent role: kubelet's health endpoint; server role adds /readyz (see README)
    vec!["wget -q -O /dev/null http://127.0.0.1:10248/healthz".into()]
}
fn default_deadline() -> u64 {
    600
}
fn default_interval() -> u64 {
    5
}
fn default_passes() -> u32 {
    3
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            commands: default_commands(),
            deadline_s: default_deadline(),
            interval_s: default_interval(),
            passes: default_passes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pending,
    Passed,
    Failed(String),
}

/// N consecutive passes before a deadline.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    needed: u32,
    streak: u32,
    started: Duration,
    deadline: Duration,
    last_failure: Option<String>,
}

impl Gate {
    pub(crate) fn new(needed: u32, deadline: Duration, now: Duration) -> Gate {
        Gate {
            needed: needed.max(1),
            streak: 0,
            started: now,
            deadline,
            last_failure: None,
        }
    }

    /// Feed one round's result (`Err` carries what failed).
    pub(crate) fn observe(&mut self, result: Result<(), String>, now: Duration) -> Verdict {
        match result {
            Ok(()) => {
                self.streak += 1;
                if self.streak >= self.needed {
                    return Verdict::Passed;
                }
            }
            Err(e) => {
                self.streak = 0;
                self.last_failure = Some(e);
            }
        }
        if now.saturating_sub(self.started) >= self.deadline {
            let why = self
                .last_failure
                .clone()
                .unwrap_or_else(|| "not enough consecutive passes".into());
            return Verdict::Failed(format!(
                "health checks did not pass within {} s: {why}",
                self.deadline.as_secs()
            ));
        }
        Verdict::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_consecutive_passes_before_deadline() {
        let t0 = Duration::from_secs(1000);
        let s = |n| t0 + Duration::from_secs(n);
        let mut g = Gate::new(2, Duration::from_secs(10), t0);
        assert_eq!(g.observe(Ok(()), s(1)), Verdict::Pending);
        assert_eq!(g.observe(Err("x".into()), s(2)), Verdict::Pending);
        assert_eq!(g.observe(Ok(()), s(3)), Verdict::Pending);
        assert_eq!(g.observe(Ok(()), s(4)), Verdict::Passed);
        let mut g = Gate::new(2, Duration::from_secs(10), t0);
        assert_eq!(g.observe(Err("readyz 503".into()), s(5)), Verdict::Pending);
        match g.observe(Ok(()), s(10)) {
            Verdict::Failed(w) => assert!(w.contains("readyz 503"), "{w}"),
            v => panic!("{v:?}"),
        }
    }
}
