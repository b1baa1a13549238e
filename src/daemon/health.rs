//! The health gate's runner: executes the configured check commands (the
//! pure `health::Gate` decides what their results mean).

use std::time::{Duration, Instant};

use crate::health::HealthConfig;

/// Run every command once; the first failure is the round's result.
pub(crate) fn run_round(cfg: &HealthConfig) -> Result<(), String> {
    for c in &cfg.commands {
        let timeout = Duration::from_secs(cfg.interval_s.max(10));
        run_one(c, timeout)?;
    }
    Ok(())
}

fn run_one(cmd: &str, timeout: Duration) -> Result<(), String> {
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{cmd}: {st}")),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd}: timed out after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{cmd}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_real_commands() {
        assert!(run_one("true", Duration::from_secs(5)).is_ok());
        assert!(run_one("exit 3", Duration::from_secs(5))
            .unwrap_err()
            .contains("3"));
        assert!(run_one("sleep 5", Duration::from_millis(200))
            .unwrap_err()
            .contains("timed out"));
    }
}
