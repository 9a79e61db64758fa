//! Measures what a Lua workflow costs on the hot path (see docs/benchmarks.md):
//! four headless workers take and finish no-op tasks through a real hub,
//! without a workflow and with a Lua `assign` and `accept`; then a workflow
//! whose split creates 10,000 tasks is loaded; then what one call of a
//! pattern function costs in a workflow (mcc's matcher, under the budget's
//! hook) against Lua's own C function in a plain Lua state.
//!
//! Run: `cargo run --release --example lua_bench` (`-- patterns` for the last part alone)

use std::path::Path;
use std::time::{Duration, Instant};

use mcc::{HubLimits, HubOptions, Policy, Scheduler, Settings, Timing};
use serde_json::{Value, json};

const TASKS: usize = 2000;
const WORKERS: usize = 4;

fn options(root: &Path, workflow: Option<&Path>) -> HubOptions {
    HubOptions {
        root: root.to_owned(),
        port: 0,
        bind: None,
        settings: Settings::default(),
        loader: Some(mcc::load_workflow),
        workflow: workflow.map(Path::to_owned),
        quiet: true,
        limits: HubLimits::default(),
        timing: Timing::default(),
        security: mcc::HubSecurity::default(),
        store: mcc::StoreChoice::default(),
    }
}

/// The project's token, which adding tasks and loading workflows need (sent in a header:
/// the hub refuses a token in the address, where logs keep it).
fn token(root: &Path) -> String {
    std::fs::read_to_string(root.join(".mcc/token")).expect("the hub wrote its token").trim().to_owned()
}

struct Client(tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>);

impl Client {
    fn connect(url: &str, token: Option<&str>) -> Self {
        use tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a ws:// address");
        if let Some(token) = token {
            request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().expect("a header value"));
        }
        let (socket, _) = tungstenite::connect(request).expect("connect");
        let mut c = Self(socket);
        c.recv();
        c
    }
    fn recv(&mut self) -> Value {
        loop {
            if let tungstenite::Message::Text(t) = self.0.read().expect("read") {
                return serde_json::from_str(&t).expect("json");
            }
        }
    }
    fn ask(&mut self, v: &Value) -> Value {
        self.0.send(tungstenite::Message::text(v.to_string())).expect("send");
        self.recv()
    }
}

/// Four workers until all done; returns tasks per second.
fn drain(url: &str) -> f64 {
    let start = Instant::now();
    let threads: Vec<_> = (0..WORKERS)
        .map(|i| {
            let url = url.to_owned();
            std::thread::spawn(move || {
                let name = format!("w{i}");
                let mut c = Client::connect(&url, None);
                let mut offer = c.ask(&json!({"type":"next","worker":name,"waitMs":5000}))["offer"].clone();
                let mut done = 0;
                loop {
                    match offer["type"].as_str() {
                        Some("task") => {
                            let reply = c.ask(&json!({"type":"done","worker":name,"taskId":offer["task"]["id"],"attempt":offer["attempt"],"waitMs":5000}));
                            assert_eq!(reply["accepted"], true, "{reply}");
                            done += 1;
                            offer = reply["next"].clone();
                        }
                        Some("nothing_yet") => {
                            offer = c.ask(&json!({"type":"next","worker":name,"waitMs":5000}))["offer"].clone();
                        }
                        _ => return done,
                    }
                }
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().expect("worker")).sum();
    assert_eq!(total, TASKS);
    TASKS as f64 / start.elapsed().as_secs_f64()
}

fn split_source(n: usize, decisions: bool) -> String {
    let decide = if decisions {
        "assign = function(worker, ready, ctx) return ready[1] end,\n accept = function(task, report, ctx) return report.status == \"completed\" end,"
    } else {
        ""
    };
    format!(
        "return {{ name = \"bench\", phases = {{ {{ name = \"work\", {decide}\n split = function(ctx)\n  local t = {{}}\n  for i = 1, {n} do t[i] = {{ id = \"t\" .. i, description = \"no-op \" .. i }} end\n  return t\n end }} }} }}"
    )
}

fn main() {
    if std::env::args().any(|a| a == "patterns") {
        patterns();
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // Without a workflow: tasks added over the wire.
    let dir = tempfile::tempdir().expect("temp");
    let running = runtime.block_on(mcc::start_hub(options(dir.path(), None))).expect("hub");
    let mut c = Client::connect(&running.url, Some(&token(dir.path())));
    let tasks: Vec<Value> = (1..=TASKS).map(|i| json!({"id": format!("t{i}"), "description": "no-op"})).collect();
    assert_eq!(c.ask(&json!({"type":"add_tasks","tasks":tasks}))["type"], "tasks_added");
    let plain = drain(&running.url);
    runtime.block_on(running.stop("done")).expect("stop");

    // With a Lua assign and accept.
    let dir = tempfile::tempdir().expect("temp");
    let file = dir.path().join("bench.lua");
    std::fs::write(&file, split_source(TASKS, true)).expect("write");
    let running = runtime.block_on(mcc::start_hub(options(dir.path(), Some(&file)))).expect("hub");
    let lua = drain(&running.url);
    runtime.block_on(running.stop("done")).expect("stop");

    println!(
        "{WORKERS} workers, {TASKS} no-op tasks: no workflow {plain:.0} tasks/s, Lua assign+accept {lua:.0} tasks/s ({:.2}x slower)",
        plain / lua
    );

    // Loading a workflow whose split creates 10,000 tasks.
    let dir = tempfile::tempdir().expect("temp");
    let file = dir.path().join("big.lua");
    std::fs::write(&file, split_source(10_000, false)).expect("write");
    let start = Instant::now();
    let mut workflow = mcc::Workflow::load(&file, dir.path()).expect("load");
    let mut scheduler = Scheduler::new(Settings::default());
    workflow.step(&mut scheduler, Instant::now()).expect("split");
    let in_memory = start.elapsed();
    assert_eq!(scheduler.tasks().count(), 10_000);

    let running = runtime.block_on(mcc::start_hub(options(dir.path(), None))).expect("hub");
    let mut c = Client::connect(&running.url, Some(&token(dir.path())));
    let start = Instant::now();
    let reply = c.ask(&json!({"type":"load_workflow","path":"big.lua"}));
    assert_eq!(reply["type"], "ack", "{reply}");
    let through_hub = start.elapsed();
    runtime.block_on(running.stop("done")).expect("stop");
    println!(
        "split of 10,000 tasks: load + split {} ms in memory; {} ms through the hub including the SQLite commit",
        ms(in_memory),
        ms(through_hub)
    );
    patterns();
}

/// Calls of each pattern function timed, and the loop they run in.
const CALLS: usize = 1_000_000;
const CALL_LOOP: &str = "local s, n = 'key=value', 0\nfor i = 1, N do if CALL then n = n + 1 end end\n";

/// Nanoseconds per call of `call` (Lua, on the string `s`) in a workflow
/// and in a plain Lua state with Lua's C functions: the loop's time with
/// the call, less the same loop's with `true` in its place.
fn per_call(dir: &Path, call: &str) -> (f64, f64) {
    let source = |call: &str| CALL_LOOP.replace('N', &CALLS.to_string()).replace("CALL", call);
    let in_workflow = |call: &str| {
        let file = dir.join("calls.lua");
        let text =
            format!("{}return {{ name = \"calls\", phases = {{ {{ name = \"p\", tasks = {{}} }} }} }}", source(call));
        std::fs::write(&file, text).expect("write");
        let start = Instant::now();
        mcc::Workflow::load(&file, dir).expect("load");
        start.elapsed()
    };
    let in_plain_lua = |call: &str| {
        let lua = mlua::Lua::new();
        let start = Instant::now();
        lua.load(source(call)).exec().expect("plain Lua");
        start.elapsed()
    };
    let ns = |with: Duration, without: Duration| with.saturating_sub(without).as_nanos() as f64 / CALLS as f64;
    (ns(in_workflow(call), in_workflow("true")), ns(in_plain_lua(call), in_plain_lua("true")))
}

fn patterns() {
    let dir = tempfile::tempdir().expect("temp");
    for call in [
        "s:byte(1)",
        "s:find('=', 1, true)",
        "s:find('=')",
        "s:match('(%w+)=(%w+)')",
        "s:gsub('%w+', '<%0>')",
        "s:gmatch('%w+')()",
    ] {
        let (workflow, plain) = per_call(dir.path(), call);
        println!(
            "{call}: {workflow:.0} ns per call in a workflow, {plain:.0} ns with Lua's C function ({:.1}x)",
            workflow / plain
        );
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}
