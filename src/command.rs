//! Running a shell command with a time limit, as validation commands and
//! workflows do.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Exit code; `None` when killed by a signal or the time limit.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// One line for a person: "exited 1: <last line of stderr>".
    pub fn summary(&self) -> String {
        let how = if self.timed_out {
            "timed out".to_owned()
        } else {
            self.code.map_or_else(|| "was killed".to_owned(), |c| format!("exited {c}"))
        };
        let tail = tail(if self.stderr.trim().is_empty() { &self.stdout } else { &self.stderr }, 400);
        if tail.is_empty() { how } else { format!("{how}: {tail}") }
    }
}

/// The last `max` bytes of `text`, trimmed, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// Run `script` with `sh -c` in `cwd`; kill it after `limit`.
pub fn run_shell(script: &str, cwd: &Path, limit: Duration) -> std::io::Result<Outcome> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = child.wait_timeout(limit)?;
    let timed_out = status.is_none();
    let code = if let Some(status) = status {
        status.code()
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    };
    let collect = |h: std::thread::JoinHandle<String>| h.join().unwrap_or_default();
    Ok(Outcome { code, stdout: collect(stdout), stderr: collect(stderr), timed_out })
}

/// Read a child's pipe to the end on its own thread.
pub fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_reports_its_code_and_output_and_a_slow_one_is_stopped() {
        let dir = std::env::temp_dir();
        let ok = run_shell("echo hi; echo oops >&2; exit 3", &dir, Duration::from_secs(10)).unwrap();
        assert_eq!((ok.code, ok.stdout.trim(), ok.stderr.trim()), (Some(3), "hi", "oops"));
        assert_eq!(ok.summary(), "exited 3: oops");
        let slow = run_shell("exec sleep 30", &dir, Duration::from_millis(100)).unwrap();
        assert!(slow.timed_out && slow.code.is_none());
    }
}
