//! The Postgres database the tests share: `scripts/test` starts one per run and
//! names it in `MCC_TEST_POSTGRES`; each test keys its own project inside it.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The test database's URL (`postgres://mcc@127.0.0.1:PORT/mcc`).
pub fn url() -> String {
    match std::env::var("MCC_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "MCC_TEST_POSTGRES is not set: this test needs a real PostgreSQL. Run the tests with \
             `scripts/test` (it starts one for the run and passes its arguments to cargo test), or \
             start one with `eval \"$(scripts/postgres start)\"`"
        ),
    }
}

/// A project name no other test (nor another run on the same database) uses:
/// the test's name, this process and a counter.
pub fn project_name(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let readable: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("{readable}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A plain client on the test database, for a test to read what the hubs wrote.
pub fn client() -> postgres::Client {
    postgres::Client::connect(&url(), postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to the test database {}: {e}", url()))
}

/// A PostgreSQL of one test's own (`scripts/postgres start`), for a test
/// that restarts its database: the shared one serves other tests meanwhile.
/// Stopped and removed when dropped.
pub struct Server {
    pub url: String,
    dir: String,
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres");

impl Server {
    pub fn start() -> Self {
        let out = Command::new(SCRIPT).arg("start").output().expect("run scripts/postgres start");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "scripts/postgres start failed: {}", String::from_utf8_lossy(&out.stderr));
        let value = |name: &str| {
            printed
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("scripts/postgres start printed no {name}: {printed}"))
                .to_owned()
        };
        Self { url: value("MCC_TEST_POSTGRES"), dir: value("MCC_TEST_POSTGRES_DIR") }
    }

    /// `pg_ctl restart -m fast`: every connection is cut; the server is back when this returns.
    pub fn restart(&self) {
        let status = Command::new(SCRIPT).args(["restart", &self.dir]).status().expect("run scripts/postgres restart");
        assert!(status.success(), "scripts/postgres restart {} failed: {status}", self.dir);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).args(["stop", &self.dir]).status();
    }
}
