//! Hostile clients, generated deterministically: thousands of handshakes
//! with foreign, `null`, non-ASCII, numeric-IP, rebinding and duplicated
//! `Host`/`Origin` headers and missing or wrong tokens, checked against an
//! independent statement of the rules; then thousands of malformed frames.
//! The counts are written in docs/security.md.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::support::{DEADLINE, Hub, Project};

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Deterministic pseudo-random numbers (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Send a handshake with these extra header lines; the response's status line.
fn handshake(port: u16, path: &str, headers: &[(&str, Vec<u8>)]) -> (Option<TcpStream>, String) {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return (None, String::new()) };
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    upgrade(stream, path, headers)
}

/// The handshake over a stream already open (TCP, or TLS over it).
fn upgrade<S: Read + Write>(mut stream: S, path: &str, headers: &[(&str, Vec<u8>)]) -> (Option<S>, String) {
    let mut request = format!("GET {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
    request.extend_from_slice(KEY.as_bytes());
    request.extend_from_slice(b"\r\n");
    if stream.write_all(&request).is_err() {
        return (None, String::new());
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let status = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
    (Some(stream), status)
}

/// One hostile handshake and whether the rules (docs/security.md) let it in.
struct Case {
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    allowed: bool,
}

/// Every combination of the header forms below, plus duplicates and query tokens.
fn handshake_cases(port: u16, token: &str) -> Vec<Case> {
    let p = port;
    let good_hosts =
        [format!("localhost:{p}"), format!("127.0.0.1:{p}"), format!("[::1]:{p}"), format!("LocalHost:{p}")];
    let bad_hosts: Vec<Vec<u8>> = [
        format!("evil.example:{p}"),
        "evil.example".to_owned(),
        "localhost".to_owned(),
        format!("localhost.:{p}"),
        format!("localhost.evil.example:{p}"),
        format!("evil.example.localhost.:{p}"),
        format!("127.0.0.1.nip.io:{p}"),
        format!("7f000001.c0a80001.rbndr.us:{p}"),
        format!("localtest.me:{p}"),
        format!("2130706433:{p}"),
        format!("0x7f000001:{p}"),
        format!("0177.0.0.1:{p}"),
        format!("127.1:{p}"),
        format!("127.0.0.2:{p}"),
        format!("0.0.0.0:{p}"),
        format!("[::ffff:127.0.0.1]:{p}"),
        format!("[0:0:0:0:0:0:0:1]:{p}"),
        format!("localhost:+{p}"),
        format!("localhost:0{p}"),
        format!("localhost:{}", u32::from(p) + 65536),
        format!("localhost:-{p}"),
        format!("localhost:{p}:{p}"),
        format!("evil@localhost:{p}"),
        format!("localhost%3a{p}"),
        String::new(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain([
        format!("localhost:{p}\u{e9}").into_bytes(),
        format!("l\u{f6}calhost:{p}").into_bytes(),
        [b"localhost:".as_slice(), p.to_string().as_bytes(), b"\xff"].concat(),
        [b"localhost\x80:".as_slice(), p.to_string().as_bytes()].concat(),
        format!("local\thost:{p}").into_bytes(),
    ])
    .collect();
    let mut hosts: Vec<(Option<Vec<u8>>, bool)> = vec![(None, false)];
    hosts.extend(good_hosts.iter().map(|h| (Some(h.clone().into_bytes()), true)));
    hosts.extend(bad_hosts.into_iter().map(|h| (Some(h), false)));

    let mut origins: Vec<(Option<Vec<u8>>, bool)> = vec![(None, true)];
    origins.extend(
        [format!("http://localhost:{p}"), format!("http://127.0.0.1:{p}"), format!("http://[::1]:{p}")]
            .into_iter()
            .map(|o| (Some(o.into_bytes()), true)),
    );
    origins.extend(
        [
            b"null".to_vec(),
            b"null\x80".to_vec(),
            b"http://evil.com\xe9".to_vec(),
            b"http://evil.com".to_vec(),
            format!("https://localhost:{p}").into_bytes(),
            format!("http://localhost:{p}/").into_bytes(),
            b"http://localhost".to_vec(),
            format!("http://localhost:{p}.evil.com").into_bytes(),
            format!("http://localhost:+{p}").into_bytes(),
            format!("HTTP://localhost:{p}").into_bytes(),
            b"file://".to_vec(),
            b"chrome-extension://abcdef".to_vec(),
            format!("http://127.0.0.1.nip.io:{p}").into_bytes(),
        ]
        .into_iter()
        .map(|o| (Some(o), false)),
    );
    let auths: Vec<(Option<Vec<u8>>, bool)> = vec![
        (None, true),
        (Some(format!("Bearer {token}").into_bytes()), true),
        (Some(b"Bearer wrong".to_vec()), false),
        (Some(format!("Bearer {token}x").into_bytes()), false),
        (Some(format!("bearer {token}").into_bytes()), false),
        (Some(b"Basic dXNlcjpwYXNz".to_vec()), false),
        (Some(b"Bearer ".to_vec()), false),
        (Some([format!("Bearer {token}").as_bytes(), b"\xff"].concat()), false),
    ];

    let mut cases = Vec::new();
    let with = |host: &Option<Vec<u8>>, origin: &Option<Vec<u8>>, auth: &Option<Vec<u8>>| {
        let mut headers = Vec::new();
        if let Some(h) = host {
            headers.push(("Host", h.clone()));
        }
        if let Some(o) = origin {
            headers.push(("Origin", o.clone()));
        }
        if let Some(a) = auth {
            headers.push(("Authorization", a.clone()));
        }
        headers
    };
    for (host, host_ok) in &hosts {
        for (origin, origin_ok) in &origins {
            for (auth, auth_ok) in &auths {
                let headers = with(host, origin, auth);
                cases.push(Case { path: "/".into(), headers, allowed: *host_ok && *origin_ok && *auth_ok });
            }
        }
        // Duplicates: the same value twice, or a good one then a bad one, are all refused.
        let good_origin = Some(format!("http://localhost:{p}").into_bytes());
        for second in [host.clone(), Some(b"evil.example".to_vec())] {
            let mut headers = with(host, &None, &None);
            headers.push(("Host", second.unwrap_or_default()));
            cases.push(Case { path: "/".into(), headers, allowed: false });
        }
        for second in [good_origin.clone(), Some(b"http://evil.example".to_vec())] {
            let mut headers = with(host, &good_origin, &None);
            headers.push(("Origin", second.unwrap_or_default()));
            cases.push(Case { path: "/".into(), headers, allowed: false });
        }
        // The token in the address, right or wrong: never, since logs keep addresses.
        for query in [format!("/?token={token}"), "/?token=wrong".to_owned(), "/?token=".into()] {
            cases.push(Case { path: query, headers: with(host, &None, &None), allowed: false });
        }
    }
    cases
}

/// Run `cases` on four threads; (wrongly accepted, wrongly refused) with examples.
fn run_cases(port: u16, cases: &[Case]) -> (usize, usize, Vec<String>) {
    run_cases_over(port, cases, None)
}

/// [`run_cases`], each handshake inside TLS when a client config is given.
fn run_cases_over(
    port: u16,
    cases: &[Case],
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> (usize, usize, Vec<String>) {
    let (wrong_in, wrong_out) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let examples = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for part in cases.chunks(cases.len().div_ceil(4)) {
            let (wrong_in, wrong_out, examples) = (&wrong_in, &wrong_out, &examples);
            scope.spawn(move || {
                for case in part {
                    let status = match tls {
                        None => handshake(port, &case.path, &case.headers).1,
                        Some(config) => crate::support::tls::connect(port, config)
                            .map(|stream| upgrade(stream, &case.path, &case.headers).1)
                            .unwrap_or_default(),
                    };
                    let accepted = status.starts_with("HTTP/1.1 101");
                    if accepted != case.allowed {
                        let counter = if accepted { wrong_in } else { wrong_out };
                        counter.fetch_add(1, Ordering::Relaxed);
                        let shown: Vec<String> =
                            case.headers.iter().map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v))).collect();
                        examples.lock().unwrap().push(format!("{} {shown:?} -> {status}", case.path));
                    }
                }
            });
        }
    });
    (wrong_in.into_inner(), wrong_out.into_inner(), examples.into_inner().unwrap())
}

fn still_serving(hub: &mut Hub) {
    assert!(hub.child.try_wait().unwrap().is_none(), "the hub is still running");
    assert_eq!(hub.connect().ask(json!({"type":"status"}))["type"], "status_response");
}

#[test]
fn hostile_handshakes_are_refused_and_the_hub_serves_on() {
    let project = Project::new();
    // A token made beforehand is kept by the hub (and lets this run against an older hub too).
    project.write(".mcc/token", &"5a".repeat(32));
    let mut hub = Hub::start(project.root(), &[]);
    let token = project.read(".mcc/token");
    let cases = handshake_cases(hub.port, token.trim());
    let allowed = cases.iter().filter(|c| c.allowed).count();
    let (wrong_in, wrong_out, examples) = run_cases(hub.port, &cases);
    eprintln!(
        "loopback hub: {} handshakes ({allowed} allowed by the rules): {wrong_in} wrongly accepted, {wrong_out} wrongly refused",
        cases.len()
    );
    assert_eq!((wrong_in, wrong_out), (0, 0), "{:#?}", &examples[..examples.len().min(20)]);
    still_serving(&mut hub);
}

#[test]
fn over_tls_the_same_hostile_handshakes_are_refused_and_bytes_that_are_not_tls_harm_nothing() {
    let project = Project::new();
    project.write(".mcc/token", &"5a".repeat(32));
    let ca = crate::support::tls::TestCa::make(project.root(), "fuzz");
    let (cert, key) = (ca.cert.display().to_string(), ca.key.display().to_string());
    let mut hub = Hub::start(project.root(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(hub.url.starts_with("wss://"), "{}", hub.url);
    let token = project.read(".mcc/token");
    let cases = handshake_cases(hub.port, token.trim());
    let (wrong_in, wrong_out, examples) = run_cases_over(hub.port, &cases, Some(&ca.client()));
    eprintln!(
        "TLS hub: {} handshakes inside TLS: {wrong_in} wrongly accepted, {wrong_out} wrongly refused",
        cases.len()
    );
    assert_eq!((wrong_in, wrong_out), (0, 0), "{:#?}", &examples[..examples.len().min(20)]);
    // Plain WebSocket, random bytes, a cut ClientHello and a TLS record
    // claiming 16 KiB that never comes: each is dropped, none gets an upgrade.
    let mut rng = Rng(0x007e_570f_7151);
    let mut garbage: Vec<Vec<u8>> = vec![
        format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n", hub.port).into_bytes(),
        vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03],
        vec![0x16, 0x03, 0x03, 0x40, 0x00],
    ];
    for _ in 0..200 {
        let len = 1 + rng.below(512);
        garbage.push((0..len).map(|_| rng.next() as u8).collect());
    }
    for bytes in &garbage {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", hub.port)) else { continue };
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = stream.write_all(bytes);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(!String::from_utf8_lossy(&answer).contains("101 Switching"), "{bytes:?} got an upgrade");
    }
    eprintln!("TLS hub: {} streams that are not TLS, each dropped", garbage.len());
    assert!(hub.child.try_wait().unwrap().is_none(), "the hub is still running");
    let run = project.mcc().args(["status", "--json"]).run();
    assert_eq!(run.code, 0, "the project's own client still gets in over TLS: {run:?}");
}

#[test]
fn beyond_loopback_every_handshake_without_the_right_token_is_refused() {
    let project = Project::new();
    let mut hub = Hub::start(project.root(), &["--bind", "0.0.0.0", "--behind-tls-proxy"]);
    let token = project.read(".mcc/token");
    let p = hub.port;
    let mut cases = Vec::new();
    for host in [format!("10.0.0.5:{p}"), format!("localhost:{p}"), "evil.example".into(), String::new()] {
        for (auth, ok) in [
            (None, false),
            (Some(format!("Bearer {}", token.trim())), true),
            (Some("Bearer wrong".to_owned()), false),
            (Some(format!("Bearer {}0", token.trim())), false),
            (Some(format!("Bearer {}", &token.trim()[..63])), false),
            (Some(format!("Token {}", token.trim())), false),
        ] {
            for origin in [None, Some(b"http://evil.example".to_vec()), Some(b"null\x80".to_vec())] {
                let mut headers = vec![("Host", host.clone().into_bytes())];
                if let Some(a) = &auth {
                    headers.push(("Authorization", a.clone().into_bytes()));
                }
                let allowed = ok && origin.is_none();
                if let Some(o) = origin {
                    headers.push(("Origin", o));
                }
                cases.push(Case { path: "/".into(), headers, allowed });
            }
        }
    }
    let (wrong_in, wrong_out, examples) = run_cases(p, &cases);
    eprintln!(
        "hub beyond loopback: {} handshakes: {wrong_in} wrongly accepted, {wrong_out} wrongly refused",
        cases.len()
    );
    assert_eq!((wrong_in, wrong_out), (0, 0), "{examples:#?}");
    let remote = format!("ws://127.0.0.1:{p}");
    let mut ok = crate::support::Ws::connect_with_token(&remote, token.trim());
    assert_eq!(ok.ask(json!({"type":"status"}))["type"], "status_response");
    assert!(hub.child.try_wait().unwrap().is_none());
}

/// The live page's handshakes: its capability from its own origin, and every
/// near miss (other origins, other ports, the hub's own origin, no origin,
/// wrong, repeated or empty capabilities, the token beside it or instead).
fn page_cases(port: u16, page_port: u16, token: &str, view: &str) -> Vec<Case> {
    let (p, q) = (port, page_port);
    let page_origin = format!("http://127.0.0.1:{q}");
    let origins: Vec<Option<String>> = vec![
        None,
        Some(page_origin.clone()),
        Some(format!("http://localhost:{q}")),
        Some(format!("http://[::1]:{q}")),
        Some(format!("https://127.0.0.1:{q}")),
        Some(format!("http://127.0.0.1:{q}/")),
        Some(format!("http://127.0.0.1:{}", u32::from(q) + 1)),
        Some(format!("http://127.0.0.1:0{q}")),
        Some(format!("http://127.0.0.1:{q}.evil.example")),
        Some(format!("HTTP://127.0.0.1:{q}")),
        Some(format!("http://127.0.0.1:{p}")),
        Some("null".to_owned()),
        Some("http://evil.example".to_owned()),
    ];
    let paths: Vec<(String, bool)> = vec![
        (format!("/?view={view}"), true),
        (format!("/?x=1&view={view}"), true),
        (format!("/?view={view}&view={view}"), false),
        (format!("/?view={view}&token={token}"), false),
        (format!("/?view={}", view.to_uppercase()), false),
        (format!("/?view={}", &view[..63]), false),
        (format!("/?view={view}0"), false),
        ("/?view=".to_owned(), false),
        (format!("/?view={token}"), false),
        (format!("/?View={view}"), false),
    ];
    let hosts = [(format!("127.0.0.1:{p}"), true), (format!("localhost:{p}"), true), (format!("127.0.0.1:{q}"), false)];
    let mut cases = Vec::new();
    for (host, host_ok) in &hosts {
        for origin in &origins {
            for (path, path_ok) in &paths {
                for auth in [false, true] {
                    let mut headers = vec![("Host", host.clone().into_bytes())];
                    if let Some(o) = origin {
                        headers.push(("Origin", o.clone().into_bytes()));
                    }
                    if auth {
                        headers.push(("Authorization", format!("Bearer {token}").into_bytes()));
                    }
                    // `View=` is no capability: the ordinary rules apply (no foreign origin).
                    let plain = path.starts_with("/?View=");
                    let allowed = if plain {
                        *host_ok && origin.as_deref().is_none_or(|o| o == format!("http://127.0.0.1:{p}"))
                    } else {
                        *host_ok && *path_ok && !auth && origin.as_deref() == Some(page_origin.as_str())
                    };
                    cases.push(Case { path: path.clone(), headers, allowed });
                }
            }
        }
    }
    cases
}

#[test]
fn only_the_live_pages_own_origin_reads_with_its_capability_and_it_can_change_nothing() {
    let project = Project::new();
    let mut hub = Hub::start(project.root(), &[]);
    let token = project.read(".mcc/token");
    let file: Value = serde_json::from_str(&project.read(".mcc/hub.json")).unwrap();
    let page_port = u16::try_from(file["pagePort"].as_u64().expect("hub.json names the page's port")).unwrap();
    let status = project.mcc().args(["status"]).run();
    let url =
        status.stdout.lines().find_map(|l| l.strip_prefix("live page (read-only): ")).expect("status prints the page");
    let view = url.split_once("view=").expect("the address carries the capability").1.to_owned();
    assert_ne!(view, token.trim(), "the capability is not the token");
    let cases = page_cases(hub.port, page_port, token.trim(), &view);
    let allowed = cases.iter().filter(|c| c.allowed).count();
    let (wrong_in, wrong_out, examples) = run_cases(hub.port, &cases);
    eprintln!(
        "live page origin: {} handshakes ({allowed} allowed by the rules): {wrong_in} wrongly accepted, {wrong_out} wrongly refused",
        cases.len()
    );
    assert_eq!((wrong_in, wrong_out), (0, 0), "{:#?}", &examples[..examples.len().min(20)]);

    // What the page's connection may send: reads only.
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("{}/?view={view}", hub.url)).unwrap();
    request.headers_mut().insert("origin", format!("http://127.0.0.1:{page_port}").parse().unwrap());
    let (mut page, _) = tungstenite::connect(request).expect("the page's handshake");
    let mut ask = |msg: Value| -> Value {
        use tungstenite::Message;
        page.send(Message::text(msg.to_string())).unwrap();
        loop {
            if let Message::Text(t) = page.read().unwrap() {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "connected" {
                    return v;
                }
            }
        }
    };
    assert_eq!(ask(json!({"type":"subscribe"}))["type"], "summary");
    for msg in [
        json!({"type":"next","worker":"w"}),
        json!({"type":"register","role":"worker","workerId":"w"}),
        json!({"type":"create_tasks","tasks":[{"id":"x","description":"d"}]}),
        json!({"type":"add_tasks","tasks":[]}),
        json!({"type":"cancel","taskId":"x"}),
    ] {
        let answer = ask(msg.clone());
        assert!(answer["error"].as_str().is_some_and(|e| e.contains("only reads")), "{msg} -> {answer}");
    }
    let list = project.mcc().args(["tasks", "list", "--json"]).run();
    assert!(!list.stdout.contains("\"x\""), "nothing was added: {list:?}");
    still_serving(&mut hub);
}

/// A token made by `mcc token add ARGS --json` in `project`: (id, secret).
fn scoped_token(project: &Project, args: &[&str]) -> (String, String) {
    let added = project.mcc().args(["token", "add"]).args(args).args(["--json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    let printed = added.json();
    (printed["id"].as_str().unwrap().to_owned(), printed["token"].as_str().unwrap().to_owned())
}

/// One request of each kind, acting as `worker` where a kind names one.
fn one_of_each(worker: &str) -> Vec<Value> {
    vec![
        json!({"type":"status"}),
        json!({"type":"snapshot"}),
        json!({"type":"show_task","taskId":"t1"}),
        json!({"type":"subscribe"}),
        json!({"type":"tasks_page"}),
        json!({"type":"next","worker":worker}),
        json!({"type":"done","worker":worker,"taskId":"nope","attempt":1}),
        json!({"type":"block","worker":worker,"taskId":"nope","question":"?"}),
        json!({"type":"fail","worker":worker,"taskId":"nope","reason":"r"}),
        json!({"type":"progress","worker":worker,"taskId":"nope","note":"n"}),
        json!({"type":"leave","worker":worker}),
        json!({"type":"task_files","worker":worker,"taskId":"nope"}),
        json!({"type":"fetch_file","worker":worker,"taskId":"nope","path":"a"}),
        json!({"type":"upload","worker":worker,"taskId":"nope","path":"a","offset":0,"size":1,"sha256":"00","data":"QQ=="}),
        json!({"type":"present","worker":worker,"kind":"mcp"}),
        json!({"type":"register","role":"worker","workerId":worker}),
        json!({"type":"register","role":"coordinator"}),
        json!({"type":"request_task"}),
        json!({"type":"task_complete","taskId":"nope","report":{}}),
        json!({"type":"create_tasks","tasks":[{"id":"c1","description":"d"}]}),
        json!({"type":"add_tasks","tasks":[]}),
        json!({"type":"load_workflow","path":"workflows/none.lua"}),
        json!({"type":"answer","taskId":"nope","text":"t"}),
        json!({"type":"cancel","taskId":"nope"}),
        json!({"type":"retry","taskId":"nope"}),
        json!({"type":"token_list"}),
        json!({"type":"token_revoke","id":"tok-none"}),
    ]
}

/// The rules (docs/security.md, "Token scopes"), stated apart from the hub's table.
fn scope_allows(scope: &str, own_name: &str, msg: &Value) -> bool {
    let kind = msg["type"].as_str().unwrap();
    let reads = ["status", "snapshot", "show_task", "subscribe", "tasks_page"];
    let works = ["next", "done", "block", "fail", "progress", "leave", "task_files", "fetch_file", "upload", "present"];
    match scope {
        "engineer" => true,
        "viewer" => reads.contains(&kind),
        _ => kind == "show_task" || works.contains(&kind) && msg["worker"] == own_name,
    }
}

#[test]
fn tokens_of_every_scope_pass_the_handshake_only_while_valid_and_each_request_is_held_to_its_scope() {
    let project = Project::new();
    let mut hub = Hub::start(project.root(), &[]);
    let p = hub.port;
    let live: Vec<(&str, String)> = vec![
        ("worker", scoped_token(&project, &["--worker", "worker-A"]).1),
        ("viewer", scoped_token(&project, &["--viewer"]).1),
        ("engineer", scoped_token(&project, &["--engineer"]).1),
    ];
    let (revoked_id, revoked) = scoped_token(&project, &["--worker", "worker-A"]);
    assert_eq!(project.mcc().args(["token", "revoke", &revoked_id]).run().code, 0);
    let (_, expiring) = scoped_token(&project, &["--viewer", "--expires", "1s"]);
    let made = std::time::Instant::now();

    // Requests: every kind from every scope, the worker's under near-miss names too.
    let mut rng = Rng(0x70_6b65_6e73);
    let names = ["worker-A", "worker-a", "worker-A ", " worker-A", "worker-B", "", "worker-A\u{0}", "WORKER-A"];
    let mut checked = 0;
    for (scope, secret) in &live {
        for round in 0..3 {
            let name = if round == 0 { "worker-A" } else { *rng.pick(&names) };
            for msg in one_of_each(name) {
                let mut ws = crate::support::Ws::connect_with_token(&hub.url, secret);
                let reply = ws.ask(msg.clone());
                let error = reply["error"].as_str().unwrap_or_default();
                let refused = error.contains("is not for this token") || error.contains("acts only as worker");
                assert_eq!(!refused, scope_allows(scope, "worker-A", &msg), "{scope} token, {msg} -> {reply}");
                checked += 1;
            }
        }
    }

    // Handshakes: each token, live, revoked, expired or made up, under good and bad names and origins.
    let mut expected_live = live.iter().map(|(_, s)| (s.clone(), true)).collect::<Vec<_>>();
    expected_live.extend([(revoked.clone(), false), ("0".repeat(64), false), (format!("{}0", live[0].1), false)]);
    eventually_past(made, 1_500);
    expected_live.push((expiring, false));
    let mut cases = Vec::new();
    for (secret, ok) in &expected_live {
        for (host, host_ok) in
            [(format!("localhost:{p}"), true), (format!("127.0.0.1:{p}"), true), ("evil.example".to_owned(), false)]
        {
            for (origin, origin_ok) in [
                (None, true),
                (Some(b"http://evil.example".to_vec()), false),
                (Some(format!("http://localhost:{p}").into_bytes()), true),
            ] {
                let mut headers = vec![
                    ("Host", host.clone().into_bytes()),
                    ("Authorization", format!("Bearer {secret}").into_bytes()),
                ];
                if let Some(o) = origin {
                    headers.push(("Origin", o));
                }
                cases.push(Case { path: "/".into(), headers, allowed: *ok && host_ok && origin_ok });
            }
        }
    }
    let (wrong_in, wrong_out, examples) = run_cases(p, &cases);
    eprintln!(
        "scoped tokens: {checked} requests held to their scope; {} handshakes: {wrong_in} wrongly accepted, {wrong_out} wrongly refused",
        cases.len()
    );
    assert_eq!((wrong_in, wrong_out), (0, 0), "{examples:#?}");
    still_serving(&mut hub);
}

/// Wait until `ms` have passed since `since`: the event is the clock passing a token's expiry.
fn eventually_past(since: std::time::Instant, ms: u64) {
    crate::support::eventually("the token's lifetime passes", || since.elapsed().as_millis() > u128::from(ms));
}

/// A client frame: masked unless told otherwise; `declared` overrides the length.
fn frame(first: u8, masked: bool, payload: &[u8], declared: Option<u64>) -> Vec<u8> {
    let mut out = vec![first];
    let len = declared.unwrap_or(payload.len() as u64);
    let mask_bit = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(mask_bit | 0x7e);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(mask_bit | 0x7f);
        out.extend_from_slice(&len.to_be_bytes());
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn random_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!(rng.next() as f64 / 7.0),
        4 => json!(rng.pick(&["", "x", "../../etc/passwd", "touch fuzz-pwned", "\u{0}", "ä"]).to_owned()),
        5 => Value::Array((0..rng.below(4)).map(|_| random_json(rng, depth + 1)).collect()),
        _ => {
            let keys = ["id", "type", "tasks", "worker", "taskId", "waitMs", "attempt", "acceptance", "role", "path"];
            Value::Object(
                (0..rng.below(4)).map(|_| ((*rng.pick(&keys)).to_owned(), random_json(rng, depth + 1))).collect(),
            )
        }
    }
}

/// A message of a real type with fields that are often wrong; tasks named `pwn-*` carry a command.
fn random_message(rng: &mut Rng, n: usize) -> Value {
    let kind = if rng.below(20) == 0 { "nope" } else { *rng.pick(mcc::ClientMsg::TYPES) };
    let mut msg = json!({"type": kind});
    match kind {
        "register" => msg["role"] = json!(rng.pick(&["coordinator", "worker", "admin"])),
        "create_tasks" | "add_tasks" => {
            let tasks: Vec<Value> = (0..rng.below(4))
                .map(|i| {
                    if rng.below(2) == 0 {
                        json!({"id": format!("pwn-{n}-{i}"), "description": "d", "acceptance": {"validation": "touch fuzz-pwned"}})
                    } else {
                        json!({"id": format!("ok-{n}-{i}"), "description": "d"})
                    }
                })
                .collect();
            msg["tasks"] = json!(tasks);
        }
        "next" | "done" | "block" | "fail" | "progress" | "leave" => {
            msg["worker"] = json!(format!("w{}", rng.below(3)));
            msg["waitMs"] = json!(rng.below(20));
            msg["taskId"] = json!(format!("ok-{}-0", rng.below(n + 1)));
        }
        "load_workflow" => msg["path"] = json!(rng.pick(&["/etc/passwd", "../x.lua", "", "wf.lua"])),
        _ => {}
    }
    for _ in 0..rng.below(3) {
        let key = (*rng.pick(&["taskId", "text", "tasks", "worker", "extra", "type"])).to_owned();
        if key != "type" || rng.below(4) == 0 {
            msg[key] = random_json(rng, 0);
        }
    }
    msg
}

/// One malformed (or merely random) frame; `None` as the second part when
/// the bytes may leave the hub waiting for the rest of a frame (then no probe).
fn hostile_frame(rng: &mut Rng, n: usize) -> (Vec<u8>, bool) {
    let probe = rng.below(20) != 19;
    let bytes = if probe { framed(rng, n) } else { (0..rng.below(40)).map(|_| rng.next() as u8).collect() };
    (bytes, probe)
}

fn framed(rng: &mut Rng, n: usize) -> Vec<u8> {
    let text = |rng: &mut Rng| random_message(rng, n).to_string().into_bytes();
    match rng.below(19) {
        0..=7 => frame(0x81, true, &text(rng), None),
        8 => frame(0x81, true, &(0..rng.below(64)).map(|_| rng.next() as u8).collect::<Vec<_>>(), None),
        9 => frame(0x81, true, &random_json(rng, 0).to_string().into_bytes(), None),
        10 => frame(0x81, true, "[".repeat(5000).as_bytes(), None),
        11 => frame(0x80 | (0x3 + rng.below(5) as u8), true, b"reserved opcode", None),
        12 => frame(0x81 | (0x10 << rng.below(3)), true, b"{\"type\":\"status\"}", None),
        13 => frame(0x81, false, b"{\"type\":\"status\"}", None),
        // Past the 1 MiB frame limit: refused at once, not waited for.
        14 => frame(0x81, true, b"{", Some(1 << (21 + rng.below(40)))),
        15 => frame(0x89, true, &[b'p'; 200], None),
        16 => frame(0x80, true, b"continuation without a start", None),
        17 => [frame(0x01, true, b"{\"type\":\"st", None), frame(0x80, true, b"\xff\xfe\"}", None)].concat(),
        _ => frame(0x82, true, &text(rng), None),
    }
}

/// One frame from the hub (never masked): its opcode and payload.
fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    let mut len = u64::from(head[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        stream.read_exact(&mut b).ok()?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        stream.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    stream.read_exact(&mut payload).ok()?;
    Some((head[0] & 0x0f, payload))
}

/// How the hub took a hostile frame, seen through a `status` probe sent after it.
#[derive(Default, Debug)]
struct Tally {
    /// The connection still answered the probe.
    answered: usize,
    /// The hub closed the connection (a protocol error).
    closed: usize,
    /// Raw bytes that may be the start of a frame: sent, then the connection dropped.
    dropped: usize,
    connections: usize,
}

/// Send `count` hostile frames, each followed by a `status` probe; reconnect
/// whenever the hub closes; every 500 frames check it serves a new client.
fn send_frames(hub: &mut Hub, token: Option<&str>, seed: u64, count: usize) -> Tally {
    let mut rng = Rng(seed);
    let mut headers = vec![("Host", format!("127.0.0.1:{}", hub.port).into_bytes())];
    if let Some(t) = token {
        headers.push(("Authorization", format!("Bearer {t}").into_bytes()));
    }
    let probe = frame(0x81, true, b"{\"type\":\"status\"}", None);
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    for n in 0..count {
        let live = stream.get_or_insert_with(|| {
            let (s, status) = handshake(hub.port, "/", &headers);
            assert!(status.starts_with("HTTP/1.1 101"), "{status}");
            tally.connections += 1;
            s.unwrap()
        });
        let (bytes, probed) = hostile_frame(&mut rng, n);
        if !probed {
            let _ = live.write_all(&bytes);
            tally.dropped += 1;
            stream = None;
            continue;
        }
        let _ = live.write_all(&bytes).and_then(|()| live.write_all(&probe));
        let answered = loop {
            match read_frame(live) {
                Some((1, text)) if String::from_utf8_lossy(&text).contains("\"status_response\"") => break true,
                Some((8, _)) | None => break false,
                Some(_) => {}
            }
        };
        if answered {
            tally.answered += 1;
        } else {
            tally.closed += 1;
            stream = None;
        }
        if n % 500 == 499 {
            still_serving(hub);
        }
    }
    tally
}

#[test]
fn malformed_frames_crash_nothing_and_without_the_token_change_nothing() {
    let project = Project::new();
    let mut hub = Hub::start(project.root(), &[]);
    let anonymous = 3000;
    let without = send_frames(&mut hub, None, 0x9e37_79b9_7f4a_7c15, anonymous);
    still_serving(&mut hub);
    let snapshot = hub.connect().ask(json!({"type":"snapshot"}))["snapshot"].clone();
    let ids: Vec<&str> = snapshot["tasks"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
    let wrongly_accepted = ids.iter().filter(|id| id.starts_with("pwn-")).count();
    assert_eq!(wrongly_accepted, 0, "tasks with a command from a connection without the token: {ids:?}");
    assert!(snapshot["workflow"].is_null(), "{snapshot}");
    let token = project.read(".mcc/token");
    let with_token = 1000;
    let with = send_frames(&mut hub, Some(token.trim()), 0x2545_f491_4f6c_dd1d, with_token);
    still_serving(&mut hub);
    eprintln!(
        "frames: {anonymous} without the token ({without:?}), {with_token} with it ({with:?}); {wrongly_accepted} wrongly accepted, 0 crashes, {} tasks created without a command",
        ids.len()
    );
    assert!(!project.path("fuzz-pwned").exists());
}
