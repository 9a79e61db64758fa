//! The live page in a real headless Chromium (Debian's `chromium`), driven
//! over the `DevTools` protocol. Ignored in a plain `cargo test` (they need
//! the browser installed); `.ci/run` installs it and runs them by name:
//! `cargo test --test lib browser:: -- --ignored`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::support::{DEADLINE, Hub, Project, eventually, old_task};

/// A headless Chromium with one tab, and a `DevTools` connection to that tab.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    tab: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run chromium (apt-get install -y chromium)");
        // Chromium writes the port it chose into the profile.
        let active = profile.path().join("DevToolsActivePort");
        let mut port = 0u16;
        eventually("chromium writes DevToolsActivePort", || {
            port = std::fs::read_to_string(&active)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
                .unwrap_or(0);
            port != 0
        });
        let mut target = None;
        eventually("chromium lists the page's tab", || {
            target = targets(port).into_iter().find(|t| t["type"] == "page" && t["url"].as_str() == Some(url));
            target.is_some()
        });
        let debugger = target.unwrap()["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let (tab, _) = tungstenite::connect(debugger.as_str()).expect("connect to the tab's DevTools");
        Self { child, _profile: profile, tab, next_id: 0 }
    }

    /// Evaluate `expression` in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let call = json!({"id": id, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": true}});
        self.tab.send(Message::text(call.to_string())).unwrap();
        if let MaybeTlsStream::Plain(s) = self.tab.get_mut() {
            s.set_read_timeout(Some(DEADLINE)).unwrap();
        }
        loop {
            let Message::Text(text) = self.tab.read().expect("DevTools answers") else { continue };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                return answer["result"]["result"]["value"].clone();
            }
        }
    }

    /// Wait until `expression` is true in the page; on failure show the page's text.
    fn wait_for(&mut self, what: &str, expression: &str) {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if self.eval(expression) == json!(true) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let text = self.eval("document.body.innerText");
        panic!("the page never showed {what} within {DEADLINE:?}; it shows:\n{}", text.as_str().unwrap_or_default());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `DevTools` list of targets (`GET /json/list`).
fn targets(port: u16) -> Vec<Value> {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return Vec::new() };
    let request = format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return Vec::new();
    }
    // DevTools keeps the connection open: read the head, then Content-Length bytes.
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|n| n.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0usize);
            if body.len() >= length {
                return serde_json::from_str(body).unwrap_or_default();
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Vec::new(),
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The page's address, as `mcc status` prints it.
fn page_url(project: &Project) -> String {
    let status = project.mcc().args(["status"]).run();
    status
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("live page (read-only): "))
        .unwrap_or_else(|| panic!("mcc status names no live page: {status:?}"))
        .to_owned()
}

/// The state the page shows for a task.
fn state_of(task: &str) -> String {
    format!("document.querySelector('[data-task=\"{task}\"]')?.dataset.state")
}

#[test]
#[ignore = "needs chromium; run by .ci/run: cargo test --test lib browser:: -- --ignored"]
fn the_live_page_shows_tasks_and_workers_and_follows_a_task_from_ready_to_accepted() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut engineer = hub.connect();
    let added = engineer.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &[])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    assert_eq!(project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run().code, 0);

    let url = page_url(&project);
    assert!(!url.contains(project.read(".mcc/token").trim()), "the address never carries the token: {url}");
    let mut page = Browser::open(&url);
    page.wait_for("the live connection", "document.getElementById('connection').textContent === 'live'");
    page.wait_for("w1 holding a", "document.querySelector('[data-worker=\"w1\"]')?.dataset.holding === 'a'");
    page.wait_for("a assigned", &format!("{} === 'assigned'", state_of("a")));
    page.wait_for("b ready", &format!("{} === 'ready'", state_of("b")));

    // Follow b as it moves, each step pushed to the page by the hub.
    let w2 = ["worker", "next", "--as", "w2", "--wait", "0s", "--can", "docs", "--model", "opus"];
    assert_eq!(project.mcc().args(w2).run().code, 0);
    page.wait_for("b assigned to w2", &format!("{} === 'assigned'", state_of("b")));
    page.wait_for(
        "w2's capabilities and model beside its name",
        "document.querySelector('[data-worker=\"w2\"] [data-kit]')?.textContent === '(can docs; model opus)'",
    );
    page.wait_for("w2 holding b", "document.querySelector('[data-worker=\"w2\"]')?.dataset.holding === 'b'");
    project.write("b.md", "done");
    let done = project.mcc().args(["worker", "done", "b", "--as", "w2", "--deliverable", "b.md", "--wait", "0s"]).run();
    assert!(done.stdout.starts_with("accepted b."), "{done:?}");
    page.wait_for("b accepted", &format!("{} === 'accepted'", state_of("b")));
    page.wait_for("w2 free again", "document.querySelector('[data-worker=\"w2\"]')?.dataset.holding === ''");
    page.wait_for(
        "one accepted of two in the phase",
        "document.querySelector('[data-phase=\"-\"]')?.textContent.includes('1 of 2 accepted')",
    );
    // The timeline: a row per worker, b's attempt coloured as accepted.
    page.wait_for("the timeline's accepted bar", "document.querySelector('#timeline rect.attempt.accepted') !== null");
    page.wait_for(
        "b's bar labelled with its task",
        "document.querySelector('#timeline text.bar-label[data-task=\"b\"]')?.textContent === 'b'",
    );
    page.wait_for(
        "a timeline row for each worker",
        "['w1','w2'].every(w => document.querySelector(`#timeline g.worker[data-worker=\"${w}\"]`))",
    );
    // Nothing on the page came from elsewhere.
    let foreign = page
        .eval("performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin))");
    assert_eq!(foreign, json!([]), "the page fetched from elsewhere");
}

#[test]
#[ignore = "needs chromium; run by .ci/run: cargo test --test lib browser:: -- --ignored"]
fn the_live_page_shows_questions_and_problems_as_they_come() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut engineer = hub.connect();
    engineer.ask(json!({"type":"add_tasks","tasks":[old_task("q", &[], &[])]}));
    let mut page = Browser::open(&page_url(&project));
    page.wait_for("q ready", &format!("{} === 'ready'", state_of("q")));
    assert_eq!(project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run().code, 0);
    let block = project
        .mcc()
        .args(["worker", "block", "q", "--as", "w1", "--question", "tabs or spaces?", "--wait", "0s"])
        .run();
    assert!(block.code == 0 || block.code == 3, "{block:?}");
    page.wait_for(
        "the question with the command to answer it",
        "document.querySelector('[data-question=\"q\"]')?.textContent.includes('mcc answer q')",
    );
    project.write(".mcc/reports/broken.json", "{ not json");
    page.wait_for(
        "the bad report file as a problem",
        "document.getElementById('problems').textContent.includes('broken.json')",
    );
}

#[test]
#[ignore = "needs chromium; run by .ci/run: cargo test --test lib browser:: -- --ignored"]
fn the_live_page_keeps_its_address_across_a_restart_and_the_open_tab_comes_back_live() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let url = page_url(&project);
    let mut page = Browser::open(&url);
    page.wait_for("the live connection", "document.getElementById('connection').textContent === 'live'");
    assert_eq!(hub.terminate(), Some(0));
    page.wait_for("the hub gone", "document.getElementById('connection').textContent !== 'live'");

    // The hub comes back on another port of its own (--port 0); the page on the same one.
    let again = Hub::start(project.root(), &[]);
    assert_eq!(page_url(&project), url, "the page kept its address across the restart");
    page.wait_for("the tab live again", "document.getElementById('connection').textContent === 'live'");
    assert_eq!(page.eval("location.href"), json!(url), "the same tab, at the same address");
    // Live from the restarted hub: a task added to it reaches the same tab.
    let added = again.connect().ask(json!({"type":"add_tasks","tasks":[old_task("after", &[], &[])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    page.wait_for("the restarted hub's task", &format!("{} === 'ready'", state_of("after")));
}

/// A hub that speaks TLS shows its page as a plain one does: the page's
/// script talks to its own origin, which relays to the hub over TLS, so the
/// browser never meets the hub's self-signed certificate.
#[test]
#[ignore = "needs chromium; run by .ci/run: cargo test --test lib browser:: -- --ignored"]
fn the_live_page_of_a_tls_hub_is_live_through_its_own_origin() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &["--tls-self-signed"]);
    project.write("tasks.json", &json!([old_task("sealed", &[], &[])]).to_string());
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    assert_eq!(project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run().code, 0);
    let url = page_url(&project);
    assert!(url.starts_with("http://127.0.0.1:"), "the page stays on loopback: {url}");
    let mut page = Browser::open(&url);
    page.wait_for("the live connection", "document.getElementById('connection').textContent === 'live'");
    page.wait_for("sealed assigned", &format!("{} === 'assigned'", state_of("sealed")));
    page.wait_for("w1 holding sealed", "document.querySelector('[data-worker=\"w1\"]')?.dataset.holding === 'sealed'");
}

#[test]
#[ignore = "needs chromium; run by .ci/run: cargo test --test lib browser:: -- --ignored"]
fn the_live_page_lists_phases_in_workflow_order_with_one_not_started_and_durations_as_mcc_prints_them() {
    let project = Project::new();
    project.write(
        "workflows/ordered.lua",
        r#"return workflow {
  name = "ordered",
  phases = {
    phase "zeta" { split = function(ctx) return { task { id = "z1", description = "first" } } end },
    phase "alpha" { split = function(ctx) return { task { id = "a1", description = "second" } } end },
  },
}
"#,
    );
    let _hub =
        Hub::start(project.root(), &["--workflow", &project.path("workflows/ordered.lua").display().to_string()]);
    assert_eq!(project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run().code, 0);
    let mut page = Browser::open(&page_url(&project));
    page.wait_for("z1 assigned", &format!("{} === 'assigned'", state_of("z1")));
    page.wait_for(
        "zeta then alpha, as the workflow declares them",
        "[...document.querySelectorAll('#phases tr[data-phase]')].map(r => r.dataset.phase).join() === 'zeta,alpha'",
    );
    page.wait_for(
        "alpha not started",
        "document.querySelector('[data-phase=\"alpha\"]').textContent.includes('not started')",
    );
    // A 30-minute lease reads as mcc prints it: 29m 58s, never 1798s.
    page.wait_for(
        "w1's lease in minutes and seconds",
        "/^(29m( [0-9]+s)?|30m)$/.test(document.querySelector('[data-worker=\"w1\"]').children[3].textContent)",
    );
    // The page's rule is the CLI's, case by case.
    for ms in [
        0, 2_999, 45_000, 90_000, 119_000, 120_000, 1_773_000, 1_799_000, 1_800_000, 3_600_000, 5_400_000, 5_459_000,
        7_200_000, 7_260_000,
    ] {
        let cli = mcc::duration(std::time::Duration::from_millis(ms));
        assert_eq!(page.eval(&format!("duration({ms})")), json!(cli), "{ms} ms");
    }
}

#[test]
#[ignore = "needs chromium; run by .ci/run: cargo test --test lib browser:: -- --ignored"]
fn the_live_page_keeps_an_answered_question_with_its_answer_and_lists_a_rejection_with_its_reason() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut checked = old_task("essay", &["essay.md"], &[]);
    checked["acceptance"]["validation"] = json!("grep -q conclusion essay.md");
    let added = hub.connect().ask(json!({"type":"add_tasks","tasks":[old_task("q", &[], &[]), checked]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let mut page = Browser::open(&page_url(&project));
    page.wait_for("q ready", &format!("{} === 'ready'", state_of("q")));

    assert_eq!(project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run().code, 0);
    let block = project
        .mcc()
        .args(["worker", "block", "q", "--as", "w1", "--question", "tabs or spaces?", "--wait", "0s"])
        .run();
    assert!(block.code == 0 || block.code == 3, "{block:?}");
    page.wait_for(
        "the question",
        "document.querySelector('[data-question=\"q\"]')?.textContent.includes('mcc answer q')",
    );
    // Blocking on q handed w1 the essay.
    assert!(block.stdout.contains("task essay (new, attempt 1"), "{block:?}");
    let answered = project.mcc().args(["answer", "q", "tabs, always"]).run();
    assert_eq!(answered.code, 0, "{answered:?}");
    let kept = "document.querySelector('[data-question=\"q\"][data-answered]')?.textContent.includes('tabs or spaces? → answered: tabs, always')";
    page.wait_for("the answered question, with its answer", kept);

    project.write("essay.md", "an essay without an ending");
    let done = project
        .mcc()
        .args(["worker", "done", "essay", "--as", "w1", "--deliverable", "essay.md", "--wait", "0s"])
        .run();
    assert!(done.stdout.starts_with("rejected essay"), "{done:?}");
    let listed = "document.querySelector('[data-rejection=\"essay\"]')?.textContent.includes('attempt 1 by w1: validation `grep -q conclusion essay.md` exited 1')";
    page.wait_for("the rejection with its reason", listed);

    // Opened afresh, the page reads both back from the event log.
    page.eval("location.reload()");
    page.wait_for("the answered question after a reload", kept);
    page.wait_for("the rejection after a reload", listed);

    // A task's row opens its history, as `mcc tasks show` has it.
    page.wait_for("essay's row", &format!("{} !== undefined", state_of("essay")));
    page.eval("document.querySelector('[data-task=\"essay\"]').click()");
    page.wait_for(
        "essay's history with the reason",
        "document.querySelector('#history [data-history=\"essay\"]')?.textContent.includes('exited 1')",
    );
}

#[test]
#[ignore = "needs chromium; run by .ci/run: cargo test --test lib browser:: -- --ignored"]
fn the_live_page_shows_what_the_run_spent_against_its_budget_as_reports_come() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut engineer = hub.connect();
    engineer.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &[])]}));
    assert_eq!(project.mcc().args(["budget", "set", "--usd", "1"]).run().code, 0);
    let mut page = Browser::open(&page_url(&project));
    page.wait_for("a ready", &format!("{} === 'ready'", state_of("a")));
    assert_eq!(project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run().code, 0);
    let done = project.mcc().args(["worker", "done", "a", "--as", "w1", "--cost", "1.2", "--wait", "0s"]).run();
    assert!(done.stdout.contains("budget of 1.00 USD is spent"), "{done:?}");
    page.wait_for(
        "the run's budget, spent",
        "document.getElementById('budgets').textContent.includes('run: 1.20 / 1.00 USD · spent')",
    );
}

#[test]
#[ignore = "needs chromium; run by .ci/run: cargo test --test lib browser:: -- --ignored"]
fn the_live_page_shows_whether_each_workers_chat_is_alive() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--presence-grace", "5m"]);
    let mut engineer = hub.connect();
    engineer.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &[])]}));
    // w1 works from the shell with no watcher: lease only. m holds a presence, as `mcc mcp` does.
    assert_eq!(project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run().code, 0);
    let mut chat = hub.connect();
    assert_eq!(chat.ask(json!({"type":"present","worker":"m","kind":"mcp"}))["what"], "present");
    assert_eq!(chat.ask(json!({"type":"next","worker":"m","waitMs":0}))["type"], "offer");
    let mut page = Browser::open(&page_url(&project));
    let presence =
        |w: &str| format!("document.querySelector('[data-worker=\"{w}\"] [data-presence]')?.dataset.presence");
    page.wait_for("w1 on its lease only", &format!("{} === 'lease_only'", presence("w1")));
    page.wait_for("m present", &format!("{} === 'present'", presence("m")));
    chat.close();
    page.wait_for("m gone, b going back", &format!("{} === 'gone'", presence("m")));
    page.wait_for(
        "when b goes back",
        "document.querySelector('[data-worker=\"m\"] [data-presence]')?.textContent.includes('b back to the queue in')",
    );
}
