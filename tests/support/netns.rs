//! A network namespace of the test's own, joined to this one by a veth pair:
//! a "machine" whose only way to the hub is a real (virtual) link with its
//! own addresses, optionally slowed by `tc netem`. Needs root (CI runs as
//! root); [`Netns::create`] says why and returns `None` otherwise, so the
//! callers skip cleanly. Shared by tests/remote.rs and benches/remote.rs.

#![allow(dead_code)]

use std::process::{Command, Output};

/// One namespace and its link; removed when dropped.
pub struct Netns {
    pub name: String,
    /// The host side's address, where a hub can listen.
    pub host_ip: String,
    /// The namespace side's address.
    pub inner_ip: String,
    host_link: String,
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// A fresh namespace named after `tag` and this process, or why not.
    pub fn create(tag: &str) -> Result<Self, String> {
        if is_root() {
            let pid = std::process::id();
            let unique = format!("{tag}{}", pid % 100_000);
            // Interface names are at most 15 bytes.
            let host_link = format!("mh{}", &unique[unique.len().saturating_sub(10)..]);
            let inner_link = format!("mn{}", &unique[unique.len().saturating_sub(10)..]);
            let subnet = format!("10.{}.{}", 100 + (pid % 97) as u8, tag.bytes().map(u32::from).sum::<u32>() % 250);
            let made = Self {
                name: format!("mcc-{unique}"),
                host_ip: format!("{subnet}.1"),
                inner_ip: format!("{subnet}.2"),
                host_link,
            };
            made.set_up(&inner_link)?;
            Ok(made)
        } else {
            Err("not root: a network namespace and a veth pair need root (CI runs the tests as root)".into())
        }
    }

    fn set_up(&self, inner_link: &str) -> Result<(), String> {
        let (ns, host, inner) = (self.name.as_str(), self.host_link.as_str(), inner_link);
        ip(&["netns", "add", ns])?;
        ip(&["link", "add", host, "type", "veth", "peer", "name", inner])?;
        ip(&["link", "set", inner, "netns", ns])?;
        ip(&["addr", "add", &format!("{}/24", self.host_ip), "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        ip(&["netns", "exec", ns, "ip", "addr", "add", &format!("{}/24", self.inner_ip), "dev", inner])?;
        ip(&["netns", "exec", ns, "ip", "link", "set", inner, "up"])?;
        ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Delay every packet the host sends into the link by `ms` milliseconds
    /// (`tc netem` on the host's end): a round trip of `ms` more.
    pub fn delay_host_side(&self, ms: u32) -> Result<(), String> {
        let out = Command::new("tc")
            .args(["qdisc", "replace", "dev", &self.host_link, "root", "netem", "delay", &format!("{ms}ms")])
            .output()
            .map_err(|e| format!("cannot run tc: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("tc netem: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
