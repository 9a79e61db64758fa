//! Small text and file helpers every layer prints or writes with, each
//! written once: cutting text to a budget ([`clip`], [`tail`]), a duration
//! as people write it ([`duration`]), a word quoted for the shell
//! ([`quoted`]), and a file written whole or not at all ([`write_atomic`]).

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

/// `text` cut to at most `max` bytes at a character boundary, with its
/// trailing blanks dropped and `…` added when it was cut; borrowed when it fits.
///
/// ```ignore
/// assert_eq!(mcc::text::clip("one two three", 8), "one two…");
/// assert_eq!(mcc::text::clip("short", 8), "short");
/// ```
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text[..end].trim_end()).into()
}

/// The last `max` bytes of `text`, trimmed, cut at a character boundary
/// (the end of a command's output says why it failed).
pub fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// A lease, a limit or a time left as a person writes it: under two minutes
/// in seconds (`90s`), under an hour in minutes and seconds (`29m 33s`,
/// `30m`), beyond in hours and minutes (`1h 30m`, `2h`); a unit that is zero
/// at the end is left out, so round values read as they were set.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    let (big, small, units) = if s < 120 {
        return format!("{s}s");
    } else if s < 3600 {
        (s / 60, s % 60, ("m", "s"))
    } else {
        (s / 3600, s % 3600 / 60, ("h", "m"))
    };
    if small == 0 { format!("{big}{}", units.0) } else { format!("{big}{} {small}{}", units.0, units.1) }
}

/// `word` as a POSIX shell reads it back, quoted only when it needs it.
/// A word with a NUL byte cannot be quoted and is given as it is.
pub fn quoted(word: &str) -> Cow<'_, str> {
    shlex::try_quote(word).unwrap_or(Cow::Borrowed(word))
}

/// Write `bytes` to `path` so that a reader sees all of it or nothing: a
/// temporary file (a dot name, which folder readers pass over, created with
/// `O_EXCL`) in the same folder, renamed over `path`. The folder must exist
/// and must not be a link (see [`StateDir`](crate::layout::StateDir)). The
/// file gets the mode `fs::write` would give it; nothing is synced to disk.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} names no file", path.display()))
    })?;
    crate::layout::StateDir::open(folder).and_then(|dir| dir.write_atomic(name, bytes)).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_marks_a_cut_with_an_ellipsis() {
        assert!(matches!(clip("exactly8", 8), Cow::Borrowed("exactly8")));
        assert_eq!(clip("abcdefghij", 4), "abcd…");
        // Blanks before the cut go: "one two…", never "one …".
        assert_eq!(clip("one   two", 5), "one…");
        // Never inside a character: é is two bytes, the cut falls back before it.
        assert_eq!(clip("abé", 3), "ab…");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn tail_keeps_the_end_trimmed_and_whole_characters() {
        assert_eq!(tail("  error: at the end \n", 6), "he end");
        assert_eq!(tail("short", 400), "short");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("xaé", 2), "é");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let d = Duration::from_secs;
        assert_eq!(duration(d(0)), "0s");
        assert_eq!(duration(d(45)), "45s");
        assert_eq!(duration(d(90)), "90s");
        assert_eq!(duration(d(119)), "119s");
        assert_eq!(duration(d(120)), "2m");
        assert_eq!(duration(d(1773)), "29m 33s");
        assert_eq!(duration(d(1799)), "29m 59s");
        assert_eq!(duration(d(1800)), "30m");
        assert_eq!(duration(d(3600)), "1h");
        assert_eq!(duration(d(5400)), "1h 30m");
        assert_eq!(duration(d(5459)), "1h 30m");
        assert_eq!(duration(d(7200)), "2h");
        assert_eq!(duration(Duration::from_millis(2999)), "2s");
    }

    #[test]
    fn a_word_is_quoted_only_when_the_shell_needs_it() {
        assert!(matches!(quoted("task-001"), Cow::Borrowed("task-001")));
        assert_eq!(quoted("workflows/wait.lua"), "workflows/wait.lua");
        assert_eq!(quoted("worker@host:1"), "worker@host:1");
        assert_eq!(quoted("two words"), "'two words'");
        assert_eq!(quoted(""), "''");
        assert_eq!(quoted("it's"), "\"it's\"");
        assert_eq!(quoted("a\0b"), "a\0b");
    }

    #[test]
    fn an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("hub.json")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            std::fs::write(&plain, b"x").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), mode(&plain), "the same mode a plain write gives");
        }
        let missing = dir.path().join("no-such-folder").join("x");
        assert!(write_atomic(&missing, b"x").is_err());
    }
}
