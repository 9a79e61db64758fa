//! Where the hub is: the ordered list of addresses a client may reach it
//! at (`--hub` / `MCC_HUB`, `hub.json`, `remote.json`, each a
//! comma-separated list), and which of them answered last in this process.
//!
//! A project whose hub can fail over (a standby on another machine) is
//! reached at any of several addresses; only one serves at a time. A
//! client tries them in order, beginning with the one that answered last
//! (a serving hub stays serving), so after a failover only the first call
//! pays for the address that went quiet. One address is today's case: the
//! list is then that address alone and nothing else changes.

use std::sync::Mutex;
use std::time::Duration;

/// How long a client with several addresses keeps going round them, when
/// none serves, before it says the hub is down: a standby takes over
/// within 10 s by default, so a worker mid-task rides through it.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(15);

/// An ordered list of hub addresses (`ws://` or `wss://` each), never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hubs {
    urls: Vec<String>,
}

/// Why a list of hub addresses was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what}, in {origin} (`{given}`); give hub addresses as ws://HOST:PORT or wss://HOST:PORT, several separated by commas"
)]
pub struct BadAddress {
    /// What is wrong, naming the element.
    pub what: String,
    /// Where the list came from: `--hub / MCC_HUB`, `.mcc/remote.json`, ...
    pub origin: String,
    /// The whole list as given.
    pub given: String,
}

impl Hubs {
    /// Parse `given`, a comma-separated list (spaces around commas are
    /// fine; a final `/` of an address is dropped), naming `source` in an error.
    ///
    /// ```ignore
    /// let hubs = Hubs::parse("ws://10.0.0.1:3100, ws://10.0.0.2:3100", "MCC_HUB")?;
    /// assert_eq!(hubs.len(), 2);
    /// ```
    pub fn parse(given: &str, source: &str) -> Result<Self, BadAddress> {
        let refuse = |what: String| BadAddress { what, origin: source.to_owned(), given: given.to_owned() };
        let mut urls: Vec<String> = Vec::new();
        for (n, element) in given.split(',').enumerate() {
            let element = element.trim();
            if element.is_empty() {
                let place = if given.trim().is_empty() {
                    "the list is empty".to_owned()
                } else {
                    format!("address {} is empty", n + 1)
                };
                return Err(refuse(place));
            }
            check(element).map_err(|why| refuse(format!("`{element}` {why}")))?;
            let url = element.trim_end_matches('/').to_owned();
            // Twice the same address would only be tried twice.
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        Ok(Self { urls })
    }

    /// One address, as this process knows it (a hub it just started).
    pub fn one(url: impl Into<String>) -> Self {
        Self { urls: vec![url.into()] }
    }

    /// The addresses in the order given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// How many addresses there are (at least one).
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Whether `url` is one of the addresses (a final `/` aside).
    pub fn contains(&self, url: &str) -> bool {
        self.position(url).is_some()
    }

    /// Where `url` sits in the list.
    pub fn position(&self, url: &str) -> Option<usize> {
        self.urls.iter().position(|u| same_address(u, url))
    }

    /// Whether every address is one of `other`'s (a token for `other` may go to each).
    pub fn within(&self, other: &Hubs) -> bool {
        self.urls.iter().all(|u| other.contains(u))
    }

    /// The addresses to try now: from the one that answered last in this
    /// process (or, after one stepped down, the one after it), round the list.
    pub fn in_order(&self) -> Vec<&str> {
        let start =
            LAST_ANSWERED.lock().ok().and_then(|last| last.as_deref().and_then(|url| self.position(url))).unwrap_or(0);
        self.urls[start..].iter().chain(&self.urls[..start]).map(String::as_str).collect()
    }

    /// `url` answered: the next call begins there.
    pub fn answered(&self, url: &str) {
        if self.len() > 1
            && let Ok(mut last) = LAST_ANSWERED.lock()
        {
            *last = Some(url.to_owned());
        }
    }

    /// `url` stepped down: the next call begins with the address after it.
    pub fn passed_over(&self, url: &str) {
        if let Some(at) = self.position(url)
            && self.len() > 1
            && let Ok(mut last) = LAST_ANSWERED.lock()
        {
            *last = Some(self.urls[(at + 1) % self.len()].clone());
        }
    }

    /// How long to keep going round the list when no address serves:
    /// `given` (`--failover-wait` / `MCC_FAILOVER_WAIT`) when set, else
    /// [`FAILOVER_WAIT`] for several addresses and nothing for one (today's
    /// single hub: down is down at once).
    pub fn failover_wait(&self, given: Option<Duration>) -> Duration {
        given.unwrap_or(if self.len() > 1 { FAILOVER_WAIT } else { Duration::ZERO })
    }

    /// The list as `MCC_HUB` carries it to a command, beginning with the
    /// address that answered last: the command's first try is the serving hub.
    pub fn to_env(&self) -> String {
        self.in_order().join(",")
    }
}

/// The list as it reads in a sentence: one address alone, several with `, `.
impl std::fmt::Display for Hubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.urls.join(", "))
    }
}

/// The pin of the address at `at` in a comma-separated list of pins: its
/// own, or the only one for every address. A list too short pins nothing
/// that a certificate could match, so the connection is refused.
pub fn pin_at(pins: &str, at: usize) -> String {
    let pins: Vec<&str> = pins.split(',').map(str::trim).collect();
    match pins.as_slice() {
        [only] => (*only).to_owned(),
        many => many.get(at).copied().unwrap_or("sha256:none-given").to_owned(),
    }
}

/// The address that answered last in this process, shared by every list
/// holding it: `mcc mcp`'s calls and `mcc worker run`'s turns each find the
/// hub again, and begin where the last one was served.
static LAST_ANSWERED: Mutex<Option<String>> = Mutex::new(None);

/// Two hub addresses are the same when they are spelled the same (a final `/` aside).
fn same_address(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// What is wrong with one address, if anything.
fn check(element: &str) -> Result<(), String> {
    let uri: tungstenite::http::Uri = element.parse().map_err(|e| format!("is not an address ({e})"))?;
    match uri.scheme_str() {
        Some("ws" | "wss") => {}
        Some(other) => return Err(format!("starts with {other}://, not ws:// or wss://")),
        None => return Err("does not start with ws:// or wss://".to_owned()),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err("names no host".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_is_a_list_of_one() {
        let hubs = Hubs::parse("ws://127.0.0.1:3100", "--hub").unwrap();
        assert_eq!(hubs.urls(), ["ws://127.0.0.1:3100"]);
        assert_eq!(hubs.to_string(), "ws://127.0.0.1:3100");
        assert_eq!(hubs.failover_wait(None), Duration::ZERO, "one address waits for nothing");
    }

    #[test]
    fn several_addresses_keep_their_order_with_spaces_and_final_slashes_dropped() {
        let hubs = Hubs::parse(" wss://a.example:3100/ ,ws://127.0.0.1:3101,  wss://[::1]:3102", "MCC_HUB").unwrap();
        assert_eq!(hubs.urls(), ["wss://a.example:3100", "ws://127.0.0.1:3101", "wss://[::1]:3102"]);
        assert_eq!(hubs.failover_wait(None), FAILOVER_WAIT);
        assert_eq!(hubs.failover_wait(Some(Duration::from_secs(2))), Duration::from_secs(2));
    }

    #[test]
    fn an_empty_element_is_refused_naming_its_place_and_source() {
        let e = Hubs::parse("ws://127.0.0.1:1,,ws://127.0.0.1:2", "--hub / MCC_HUB").unwrap_err();
        assert_eq!(e.what, "address 2 is empty");
        let shown = e.to_string();
        assert!(shown.contains("--hub / MCC_HUB") && shown.contains("ws://127.0.0.1:1,,ws://127.0.0.1:2"), "{shown}");
        assert_eq!(Hubs::parse("ws://127.0.0.1:1,", "x").unwrap_err().what, "address 2 is empty");
        assert_eq!(Hubs::parse("  ", "x").unwrap_err().what, "the list is empty");
    }

    #[test]
    fn a_bad_address_is_refused_naming_it() {
        let e = Hubs::parse("ws://127.0.0.1:1, http://127.0.0.1:2", ".mcc/remote.json").unwrap_err();
        assert_eq!(e.what, "`http://127.0.0.1:2` starts with http://, not ws:// or wss://");
        assert!(e.to_string().contains(".mcc/remote.json"), "{e}");
        assert!(Hubs::parse("127.0.0.1:3100", "x").unwrap_err().what.starts_with("`127.0.0.1:3100`"));
        assert!(Hubs::parse("ws://", "x").is_err());
        assert!(Hubs::parse("ws://a b:1", "x").unwrap_err().what.contains("is not an address"));
    }

    #[test]
    fn a_token_goes_only_where_every_address_is_the_files() {
        let file = Hubs::parse("wss://a:1,wss://b:2", "f").unwrap();
        assert!(Hubs::parse("wss://b:2/", "x").unwrap().within(&file));
        assert!(Hubs::parse("wss://b:2,wss://a:1", "x").unwrap().within(&file));
        assert!(!Hubs::parse("wss://b:2,wss://c:3", "x").unwrap().within(&file));
    }

    #[test]
    fn each_address_has_its_own_pin_or_the_only_one() {
        assert_eq!(pin_at("sha256:aa", 1), "sha256:aa");
        assert_eq!(pin_at("sha256:aa, sha256:bb", 1), "sha256:bb");
        assert_eq!(pin_at("sha256:aa,sha256:bb", 2), "sha256:none-given", "a list too short pins nothing real");
    }

    #[test]
    fn the_address_that_answered_last_is_tried_first_and_one_that_stepped_down_last() {
        // Addresses of their own: the memory is the process's.
        let hubs = Hubs::parse("ws://10.9.9.1:1,ws://10.9.9.2:1,ws://10.9.9.3:1", "x").unwrap();
        hubs.answered("ws://10.9.9.2:1");
        assert_eq!(hubs.in_order(), ["ws://10.9.9.2:1", "ws://10.9.9.3:1", "ws://10.9.9.1:1"]);
        assert_eq!(hubs.to_env(), "ws://10.9.9.2:1,ws://10.9.9.3:1,ws://10.9.9.1:1");
        hubs.passed_over("ws://10.9.9.3:1");
        assert_eq!(hubs.in_order(), ["ws://10.9.9.1:1", "ws://10.9.9.2:1", "ws://10.9.9.3:1"]);
    }
}
