//! Lua 5.4's pattern matcher, in Rust, with a meter: what `string.find`,
//! `match`, `gmatch` and `gsub` run on (see [`super::strings`]) so that no
//! pattern on any text can hold the engine past the workflow's budget.
//!
//! The language is Lua's, to the byte: the same classes (C locale), sets,
//! repetitions, captures, back-references, `%b`, `%f`, the same recursion
//! bound (200 nested items, "pattern too complex") and the same error
//! messages. What differs is that every step counts, and every [`TICK`]
//! steps the meter is asked whether the call may go on: Lua's matcher runs
//! in C, where the budget's hook cannot stop it, and some patterns take
//! exponential time (`("a"):rep(500):match("(.-)(.-)(.-)b")` ran 40 s).
//! The recursion is Rust's own, bounded at 200 frames of a few dozen bytes.

use std::ops::Range;

/// Captures one match may hold (Lua's `LUA_MAXCAPTURES`).
pub const MAX_CAPTURES: usize = 32;
/// Nested pattern items a match may enter (Lua's `MAXCCALLS`).
const MAX_DEPTH: u32 = 200;
/// The meter is asked every this many steps: a step is a few nanoseconds,
/// so the budget is seen within microseconds.
const TICK: u32 = 1 << 10;
/// Length marks of a capture still open, and of a position capture `()`.
const UNFINISHED: isize = -1;
const POSITION: isize = -2;

/// Why a match did not finish.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The pattern is wrong, in the words Lua uses ("malformed pattern (ends with '%')").
    Pattern(String),
    /// The meter said stop: its message.
    Meter(String),
}

fn wrong(message: impl Into<String>) -> Stop {
    Stop::Pattern(message.into())
}

/// One capture of a match: text of the subject, or a position `()` (counted from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    Text(Range<usize>),
    Position(usize),
}

/// A subject and a pattern (without the anchor `^`, which the caller
/// handles as each function does), and the state of the current match.
pub struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    /// Where each capture starts, and its length or [`UNFINISHED`] or [`POSITION`].
    captures: [(usize, isize); MAX_CAPTURES],
    depth: u32,
    steps: u32,
    /// Asked every [`TICK`] steps: `Some(message)` stops the match.
    meter: &'a mut dyn FnMut() -> Option<String>,
}

impl<'a> Matcher<'a> {
    pub fn new(src: &'a [u8], pat: &'a [u8], meter: &'a mut dyn FnMut() -> Option<String>) -> Self {
        Self { src, pat, level: 0, captures: [(0, 0); MAX_CAPTURES], depth: MAX_DEPTH, steps: 0, meter }
    }

    /// Match the whole pattern at `s`: where the match ends, if it does.
    pub fn at(&mut self, s: usize) -> Result<Option<usize>, Stop> {
        self.level = 0;
        self.depth = MAX_DEPTH;
        self.step()?;
        self.items(s, 0)
    }

    /// Count a step; every [`TICK`] steps, ask the meter.
    #[inline]
    fn step(&mut self) -> Result<(), Stop> {
        self.steps = self.steps.wrapping_add(1);
        if self.steps.is_multiple_of(TICK)
            && let Some(message) = (self.meter)()
        {
            return Err(Stop::Meter(message));
        }
        Ok(())
    }

    /// The pattern byte at `i`, or 0 past its end (Lua reads the string's terminating NUL there).
    #[inline]
    fn p(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// The subject byte at `i`, or 0 past its end (as in Lua).
    #[inline]
    fn s(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// How many values the last match gives: its captures, or the whole
    /// match when it has none and `whole` (find gives none then).
    pub fn capture_count(&self, whole: bool) -> usize {
        if self.level == 0 && whole { 1 } else { self.level }
    }

    /// Capture `i` of the last match, which spans `s..e`; capture 0 of a
    /// pattern without captures is the whole match.
    pub fn capture(&self, i: usize, s: usize, e: usize) -> Result<Capture, Stop> {
        if i >= self.level {
            if i != 0 {
                return Err(wrong(format!("invalid capture index %{}", i + 1)));
            }
            return Ok(Capture::Text(s..e));
        }
        let (init, len) = self.captures[i];
        match len {
            UNFINISHED => Err(wrong("unfinished capture")),
            POSITION => Ok(Capture::Position(init + 1)),
            len => Ok(Capture::Text(init..init + len.unsigned_abs())),
        }
    }

    /// The pattern from `p` on, at subject position `s`: where the match
    /// ends. Items that end the match (or fail it) loop here instead of
    /// recursing, as Lua's `goto init` does; the others recurse, counted in
    /// `depth`.
    fn items(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, Stop> {
        if self.depth == 0 {
            return Err(wrong("pattern too complex"));
        }
        self.depth -= 1;
        let end = loop {
            self.step()?;
            if p == self.pat.len() {
                break Some(s);
            }
            match self.pat[p] {
                b'(' => {
                    break if self.p(p + 1) == b')' {
                        self.start_capture(s, p + 2, POSITION)?
                    } else {
                        self.start_capture(s, p + 1, UNFINISHED)?
                    };
                }
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == self.pat.len() => break (s == self.src.len()).then_some(s),
                b'%' if self.p(p + 1) == b'b' => match self.balance(s, p + 2)? {
                    Some(e) => {
                        s = e;
                        p += 4;
                    }
                    None => break None,
                },
                b'%' if self.p(p + 1) == b'f' => {
                    p += 2;
                    if self.p(p) != b'[' {
                        return Err(wrong("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    if !self.in_set(previous, p, ep - 1) && self.in_set(self.s(s), p, ep - 1) {
                        p = ep;
                    } else {
                        break None;
                    }
                }
                b'%' if self.p(p + 1).is_ascii_digit() => match self.back_reference(s, self.p(p + 1))? {
                    Some(e) => {
                        s = e;
                        p += 2;
                    }
                    None => break None,
                },
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.p(ep);
                    if !self.single(s, p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        break None;
                    }
                    match suffix {
                        b'?' => {
                            if let Some(e) = self.items(s + 1, ep + 1)? {
                                break Some(e);
                            }
                            p = ep + 1;
                        }
                        b'+' => break self.longest(s + 1, p, ep)?,
                        b'*' => break self.longest(s, p, ep)?,
                        b'-' => break self.shortest(s, p, ep)?,
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        };
        self.depth += 1;
        Ok(end)
    }

    /// `x*` (and `x+` after its first): as many as match, then fewer until the rest matches.
    fn longest(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Stop> {
        let mut i = 0;
        while self.single(s + i, p, ep) {
            self.step()?;
            i += 1;
        }
        loop {
            if let Some(e) = self.items(s + i, ep + 1)? {
                return Ok(Some(e));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    /// `x-`: as few as let the rest match.
    fn shortest(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, Stop> {
        loop {
            if let Some(e) = self.items(s, ep + 1)? {
                return Ok(Some(e));
            }
            if !self.single(s, p, ep) {
                return Ok(None);
            }
            s += 1;
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Result<Option<usize>, Stop> {
        if self.level >= MAX_CAPTURES {
            return Err(wrong("too many captures"));
        }
        self.captures[self.level] = (s, what);
        self.level += 1;
        let end = self.items(s, p)?;
        if end.is_none() {
            self.level -= 1;
        }
        Ok(end)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        let Some(l) = (0..self.level).rev().find(|&l| self.captures[l].1 == UNFINISHED) else {
            return Err(wrong("invalid pattern capture"));
        };
        self.captures[l].1 = (s - self.captures[l].0) as isize;
        let end = self.items(s, p)?;
        if end.is_none() {
            self.captures[l].1 = UNFINISHED;
        }
        Ok(end)
    }

    /// `%1`..`%9` (and `%0`, always refused): the same text as that capture.
    fn back_reference(&mut self, s: usize, digit: u8) -> Result<Option<usize>, Stop> {
        let l = i32::from(digit) - i32::from(b'1');
        let l = usize::try_from(l)
            .ok()
            .filter(|&l| l < self.level && self.captures[l].1 != UNFINISHED)
            .ok_or_else(|| wrong(format!("invalid capture index %{}", l + 1)))?;
        let (init, len) = self.captures[l];
        // A position capture has no text: it never matches (as in Lua).
        let Ok(len) = usize::try_from(len) else { return Ok(None) };
        let found = self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len];
        Ok(found.then_some(s + len))
    }

    /// `%bxy` at `s` (`p` is just past `%b`): where the balanced text ends.
    fn balance(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        if p + 1 >= self.pat.len() {
            return Err(wrong("malformed pattern (missing arguments to '%b')"));
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        if s >= self.src.len() || self.src[s] != open {
            return Ok(None);
        }
        let mut depth = 1usize;
        for i in s + 1..self.src.len() {
            self.step()?;
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
        }
        Ok(None)
    }

    /// Just past the single-character class starting at `p` (`x`, `%x`, `[...]`).
    fn class_end(&self, p: usize) -> Result<usize, Stop> {
        let mut p = p;
        let first = self.pat[p];
        p += 1;
        match first {
            b'%' => {
                if p == self.pat.len() {
                    return Err(wrong("malformed pattern (ends with '%')"));
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.p(p) == b'^' {
                    p += 1;
                }
                // A `]` right after `[` or `[^` is part of the set.
                loop {
                    if p == self.pat.len() {
                        return Err(wrong("malformed pattern (missing ']')"));
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == b'%' && p < self.pat.len() {
                        p += 1;
                    }
                    if self.p(p) == b']' {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    /// Whether the subject byte at `s` is in the class `p..ep`.
    #[inline]
    fn single(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else { return false };
        match self.pat[p] {
            b'.' => true,
            b'%' => class(c, self.p(p + 1)),
            b'[' => self.in_set(c, p, ep - 1),
            other => other == c,
        }
    }

    /// Whether `c` is in the set `[...]` from `p` (its `[`) to `ec` (its `]`).
    fn in_set(&self, c: u8, p: usize, ec: usize) -> bool {
        let mut p = p;
        let mut inside = true;
        if self.p(p + 1) == b'^' {
            inside = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                return !inside;
            }
            if self.pat[p] == b'%' {
                p += 1;
                if class(c, self.p(p)) {
                    return inside;
                }
            } else if self.p(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return inside;
                }
            } else if self.pat[p] == c {
                return inside;
            }
        }
    }
}

/// Whether `c` is in the class `%cl` (C locale: ASCII only); an upper-case
/// class is the complement, any other byte stands for itself.
fn class(c: u8, cl: u8) -> bool {
    let found = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        // C's isspace: Rust's is_ascii_whitespace leaves out \v.
        b's' => c == b' ' || (b'\t'..=b'\r').contains(&c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_lowercase() { found } else { !found }
}

/// Whether a pattern has none of Lua's special characters: `find` searches for it as plain text.
pub fn is_plain(pattern: &[u8]) -> bool {
    !pattern.iter().any(|b| b"^$*+?.([%-".contains(b))
}

/// Where `needle` first occurs in `hay`, in time linear in both: Lua's
/// search compares the whole needle at each place its first byte matches,
/// quadratic on repetitive text, with no step to count.
pub fn find_plain(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Lua's rule for a start position (`init`): negative counts back from
/// the end, 0 and anything before the start is 1; the result counts from 1.
pub fn start_position(init: i64, len: usize) -> usize {
    match init {
        i if i > 0 => usize::try_from(i).unwrap_or(usize::MAX),
        0 => 1,
        i if i.unsigned_abs() > len as u64 => 1,
        i => len - usize::try_from(i.unsigned_abs()).unwrap_or(0) + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captures of the first match of `pat` in `src`, as `string.match` gives them.
    fn first(src: &str, pat: &str) -> Result<Option<Vec<String>>, Stop> {
        let mut never = || None;
        let (pat, anchored) = match pat.strip_prefix('^') {
            Some(rest) => (rest, true),
            None => (pat, false),
        };
        let mut m = Matcher::new(src.as_bytes(), pat.as_bytes(), &mut never);
        for s in 0..=src.len() {
            if let Some(e) = m.at(s)? {
                let mut out = Vec::new();
                for i in 0..m.capture_count(true) {
                    out.push(match m.capture(i, s, e)? {
                        Capture::Text(r) => src[r].to_owned(),
                        Capture::Position(n) => n.to_string(),
                    });
                }
                return Ok(Some(out));
            }
            if anchored {
                break;
            }
        }
        Ok(None)
    }

    #[test]
    fn the_pattern_language_is_lua_s() {
        let cases: &[(&str, &str, Option<&[&str]>)] = &[
            ("  hello  ", "^%s*(.-)%s*$", Some(&["hello"])),
            ("key = value", "(%w+)%s*=%s*(%w+)", Some(&["key", "value"])),
            ("f(a(b)c)d", "%b()", Some(&["(a(b)c)"])),
            ("THE (quick) fox", "%f[%a]%a+", Some(&["THE"])),
            ("hello", "()ll()", Some(&["3", "5"])),
            ("abcabc", "(abc)%1", Some(&["abc"])),
            ("a.b", "[%.]", Some(&["."])),
            ("x]y", "[]]", Some(&["]"])),
            ("\u{b}", "%s", Some(&["\u{b}"])),
            ("abc", "^b", None),
            ("abc", "c$", Some(&["c"])),
            ("a$b", "$b", Some(&["$b"])),
        ];
        for (src, pat, want) in cases {
            let got = first(src, pat).unwrap();
            let want = want.map(|w| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
            assert_eq!(got, want, "{src:?} ~ {pat:?}");
        }
    }

    #[test]
    fn a_malformed_pattern_is_named_as_lua_names_it() {
        for (pat, message) in [
            ("%", "malformed pattern (ends with '%')"),
            ("[a", "malformed pattern (missing ']')"),
            ("%b", "malformed pattern (missing arguments to '%b')"),
            ("%fa", "missing '[' after '%f' in pattern"),
            ("(a)%2", "invalid capture index %2"),
            ("a)", "invalid pattern capture"),
            ("(a", "unfinished capture"),
        ] {
            assert_eq!(first("a", pat), Err(Stop::Pattern(message.to_owned())), "{pat}");
        }
    }

    #[test]
    fn deep_patterns_stop_at_lua_s_bound_not_at_the_stack_s() {
        let deep = "a?".repeat(300);
        assert_eq!(first(&"a".repeat(300), &deep), Err(Stop::Pattern("pattern too complex".to_owned())));
    }

    #[test]
    fn a_plain_search_finds_the_first_place_in_repetitive_text() {
        let hay = format!("{}b{}", "a".repeat(100_000), "a".repeat(10));
        let needle = format!("{}b", "a".repeat(50_000));
        assert_eq!(find_plain(hay.as_bytes(), needle.as_bytes()), Some(50_000));
        assert_eq!(find_plain(b"abc", b""), Some(0));
        assert_eq!(find_plain(b"", b"a"), None);
    }

    #[test]
    fn the_meter_stops_an_exponential_match() {
        let src = "a".repeat(500);
        let mut asked = 0u32;
        let mut meter = || {
            asked += 1;
            (asked > 100).then(|| "stopped".to_owned())
        };
        let mut m = Matcher::new(src.as_bytes(), b"(.-)(.-)(.-)b", &mut meter);
        assert_eq!(m.at(0), Err(Stop::Meter("stopped".to_owned())));
    }
}
