//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` for a
//! workflow, on mcc's own matcher ([`super::patterns`]) in place of Lua's:
//! the same language, results and error messages, but a match that runs
//! past the call's time ends in the budget's error (which names the
//! function and the pattern, and says how to write it differently) instead
//! of holding the engine for as long as C takes.
//!
//! Each function is a Rust half that does the work and a small Lua half
//! installed in the `string` table (also the strings' `__index`, so
//! `s:match()` is the same function). An error of the script's own, a
//! malformed pattern or a bad argument, comes back to the Lua half as a
//! value and is raised there as Lua raises it, a string with the caller's
//! `file:line:`, which a `pcall` catches as before. The budget's error is
//! raised from Rust and cannot be caught.

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::limits::{self, Budget, Nested};
use super::patterns::{self, Capture, Matcher, Stop};

/// The Lua halves: `FAIL` first means the next value is an error to raise
/// as it is (it carries its place already).
const HALVES: &str = r"
local raw, FAIL = ...
local error = error
local function check(first, ...)
  if first == FAIL then error((...), 0) end
  return first, ...
end
local find, match, gmatch, gsub = raw.find, raw.match, raw.gmatch, raw.gsub
string.find = function(...) return check(find(...)) end
string.match = function(...) return check(match(...)) end
string.gsub = function(...) return check(gsub(...)) end
string.gmatch = function(...)
  local next_match = check(gmatch(...))
  return function() return check(next_match()) end
end
";

/// Longest text `string.gsub` builds. Its buffer is Rust's, outside the Lua
/// state's memory limit, so it has its own bound: the frame limit, past
/// which no message carries the text anyway.
pub const GSUB_RESULT: usize = crate::wire::MAX_FRAME;

/// How a call failed.
enum Failure {
    /// An error of the script's own, with its place, for the Lua half to raise.
    Script(String),
    /// The budget's error, or one from a function `gsub` called.
    Raised(mlua::Error),
}

impl From<mlua::Error> for Failure {
    fn from(e: mlua::Error) -> Self {
        Failure::Raised(e)
    }
}

/// What a Rust half needs: the state, the budget, and the mark of a script error.
#[derive(Clone)]
struct Half {
    budget: Budget,
    fail: Table,
}

/// Install the four functions in `string`.
pub fn install(lua: &Lua, budget: &Budget) -> mlua::Result<()> {
    let half = Half { budget: budget.clone(), fail: lua.create_table()? };
    let raw = lua.create_table()?;
    let h = half.clone();
    raw.set("find", lua.create_function(move |lua, args: MultiValue| h.answer(lua, h.find(lua, &args, true)))?)?;
    let h = half.clone();
    raw.set("match", lua.create_function(move |lua, args: MultiValue| h.answer(lua, h.find(lua, &args, false)))?)?;
    let h = half.clone();
    raw.set("gmatch", lua.create_function(move |lua, args: MultiValue| h.answer(lua, h.gmatch(lua, &args)))?)?;
    let h = half.clone();
    raw.set("gsub", lua.create_function(move |lua, args: MultiValue| h.answer(lua, h.gsub(lua, &args)))?)?;
    lua.load(HALVES).set_name("@mcc").call::<()>((raw, half.fail))
}

impl Half {
    fn answer(&self, lua: &Lua, result: Result<MultiValue, Failure>) -> mlua::Result<MultiValue> {
        match result {
            Ok(values) => Ok(values),
            Err(Failure::Script(message)) => {
                let message = lua.create_string(message)?;
                Ok(MultiValue::from_vec(vec![Value::Table(self.fail.clone()), Value::String(message)]))
            }
            Err(Failure::Raised(e)) => Err(e),
        }
    }

    /// The meter of a match: the budget's error once the call is past its time.
    fn meter<'a>(
        &'a self,
        lua: &'a Lua,
        name: &'a str,
        pattern: &'a [u8],
        len: usize,
    ) -> impl FnMut() -> Option<String> + 'a {
        move || self.budget.overdue(|spent| overdue(lua, name, pattern, len, spent))
    }

    /// `string.find(s, pattern, init, plain)` and `string.match(s, pattern, init)`.
    fn find(&self, lua: &Lua, args: &MultiValue, find: bool) -> Result<MultiValue, Failure> {
        let name = if find { "find" } else { "match" };
        let subject = string_arg(lua, args, 1, name)?;
        let pattern = string_arg(lua, args, 2, name)?;
        let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
        let init = patterns::start_position(integer_arg(lua, args, 3, name, 1)?, src.len()) - 1;
        if init > src.len() {
            return Ok(MultiValue::from_vec(vec![Value::Nil]));
        }
        let plain = find && args.get(3).is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
        if find && (plain || patterns::is_plain(&pat)) {
            return Ok(match patterns::find_plain(&src[init..], &pat) {
                Some(at) => {
                    let start = init + at;
                    MultiValue::from_vec(vec![position(start + 1), position(start + pat.len())])
                }
                None => MultiValue::from_vec(vec![Value::Nil]),
            });
        }
        let (anchored, body) = match pat.first() {
            Some(b'^') => (true, &pat[1..]),
            _ => (false, &pat[..]),
        };
        let mut meter = self.meter(lua, name, &pat, src.len());
        let mut m = Matcher::new(&src, body, &mut meter);
        for s in init..=src.len() {
            let Some(e) = m.at(s).map_err(|stop| stopped(lua, stop))? else {
                if anchored {
                    break;
                }
                continue;
            };
            let mut out = Vec::with_capacity(m.capture_count(!find) + 2);
            if find {
                out.extend([position(s + 1), position(e)]);
            }
            for i in 0..m.capture_count(!find) {
                out.push(capture_value(lua, &src, m.capture(i, s, e).map_err(|stop| stopped(lua, stop))?)?);
            }
            return Ok(MultiValue::from_vec(out));
        }
        Ok(MultiValue::from_vec(vec![Value::Nil]))
    }

    /// `string.gmatch(s, pattern, init)`: the iterator. A `^` does not
    /// anchor here (it would stop the iteration): it is a plain character.
    fn gmatch(&self, lua: &Lua, args: &MultiValue) -> Result<MultiValue, Failure> {
        let subject = string_arg(lua, args, 1, "gmatch")?;
        let pattern = string_arg(lua, args, 2, "gmatch")?;
        let len = subject.as_bytes().len();
        let init = patterns::start_position(integer_arg(lua, args, 3, "gmatch", 1)?, len) - 1;
        // Where the next search starts, and where the last match ended (an
        // empty match there is skipped).
        let mut next = init.min(len + 1);
        let mut last: Option<usize> = None;
        let half = self.clone();
        let iterator = lua.create_function_mut(move |lua, ()| {
            let run = |next: &mut usize, last: &mut Option<usize>| -> Result<MultiValue, Failure> {
                let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
                let mut meter = half.meter(lua, "gmatch", &pat, src.len());
                let mut m = Matcher::new(&src, &pat, &mut meter);
                for s in *next..=src.len() {
                    let found = m.at(s).map_err(|stop| stopped(lua, stop))?;
                    if let Some(e) = found.filter(|&e| Some(e) != *last) {
                        *next = e;
                        *last = Some(e);
                        let mut out = Vec::with_capacity(m.capture_count(true));
                        for i in 0..m.capture_count(true) {
                            out.push(capture_value(lua, &src, m.capture(i, s, e).map_err(|stop| stopped(lua, stop))?)?);
                        }
                        return Ok(MultiValue::from_vec(out));
                    }
                }
                *next = src.len() + 1;
                Ok(MultiValue::new())
            };
            let result = run(&mut next, &mut last);
            half.answer(lua, result)
        })?;
        Ok(MultiValue::from_vec(vec![Value::Function(iterator)]))
    }

    /// `string.gsub(s, pattern, repl, n)`.
    fn gsub(&self, lua: &Lua, args: &MultiValue) -> Result<MultiValue, Failure> {
        let subject = string_arg(lua, args, 1, "gsub")?;
        let pattern = string_arg(lua, args, 2, "gsub")?;
        let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
        let repl = args.get(2).cloned().unwrap_or(Value::Nil);
        let replacement = match &repl {
            Value::String(s) => Replacement::Text(s.clone()),
            Value::Integer(_) | Value::Number(_) => Replacement::Text(number_text(lua, repl.clone())?),
            Value::Table(t) => Replacement::Table(t.clone()),
            Value::Function(f) => Replacement::Function(f.clone()),
            other => {
                let got = if args.len() < 3 { "no value".to_owned() } else { type_name(other) };
                return Err(argument_error(lua, 3, "gsub", &format!("string/function/table expected, got {got}")));
            }
        };
        let max = integer_arg(lua, args, 4, "gsub", i64::try_from(src.len()).unwrap_or(i64::MAX).saturating_add(1))?;
        // A function or a table's metamethod runs Lua again from here.
        let _nested = match replacement {
            Replacement::Text(_) => None,
            _ => Some(Nested::enter("string.gsub")?),
        };
        let (anchored, body) = match pat.first() {
            Some(b'^') => (true, &pat[1..]),
            _ => (false, &pat[..]),
        };
        let mut meter = self.meter(lua, "gsub", &pat, src.len());
        let mut m = Matcher::new(&src, body, &mut meter);
        let mut out: Vec<u8> = Vec::new();
        let (mut s, mut last, mut n, mut changed) = (0usize, None, 0i64, false);
        while n < max {
            let found = m.at(s).map_err(|stop| stopped(lua, stop))?;
            if let Some(e) = found.filter(|&e| Some(e) != last) {
                n += 1;
                changed |= replacement.add(lua, &m, &src, s, e, &mut out)?;
                s = e;
                last = Some(e);
            } else if s < src.len() {
                out.push(src[s]);
                s += 1;
            } else {
                break;
            }
            if out.len() > GSUB_RESULT {
                return Err(too_long(lua));
            }
            if anchored {
                break;
            }
        }
        let result = if changed {
            out.extend_from_slice(&src[s..]);
            if out.len() > GSUB_RESULT {
                return Err(too_long(lua));
            }
            Value::String(lua.create_string(&out)?)
        } else {
            Value::String(subject.clone())
        };
        Ok(MultiValue::from_vec(vec![result, Value::Integer(n)]))
    }
}

/// What `gsub` puts in place of a match.
enum Replacement {
    Text(mlua::String),
    Table(Table),
    Function(Function),
}

impl Replacement {
    /// Add the replacement of the match `s..e` to `out`: whether it changed the text.
    fn add(&self, lua: &Lua, m: &Matcher, src: &[u8], s: usize, e: usize, out: &mut Vec<u8>) -> Result<bool, Failure> {
        let capture = |i: usize| m.capture(i, s, e).map_err(|stop| stopped(lua, stop));
        let value = match self {
            Replacement::Text(text) => {
                let text = text.as_bytes();
                let mut rest = &text[..];
                while let Some(at) = rest.iter().position(|&b| b == b'%') {
                    out.extend_from_slice(&rest[..at]);
                    let next = rest.get(at + 1).copied().unwrap_or(0);
                    match next {
                        b'%' => out.push(b'%'),
                        b'0' => out.extend_from_slice(&src[s..e]),
                        b'1'..=b'9' => match capture(usize::from(next - b'1'))? {
                            Capture::Text(r) => out.extend_from_slice(&src[r]),
                            Capture::Position(p) => out.extend_from_slice(p.to_string().as_bytes()),
                        },
                        _ => return Err(script_error(lua, "invalid use of '%' in replacement string")),
                    }
                    rest = rest.get(at + 2..).unwrap_or_default();
                }
                out.extend_from_slice(rest);
                return Ok(true);
            }
            Replacement::Table(t) => t.get::<Value>(capture_value(lua, src, capture(0)?)?).map_err(unwrap_script)?,
            Replacement::Function(f) => {
                let mut args = Vec::with_capacity(m.capture_count(true));
                for i in 0..m.capture_count(true) {
                    args.push(capture_value(lua, src, capture(i)?)?);
                }
                f.call::<Value>(MultiValue::from_vec(args)).map_err(unwrap_script)?
            }
        };
        match value {
            Value::Nil | Value::Boolean(false) => {
                out.extend_from_slice(&src[s..e]);
                Ok(false)
            }
            Value::String(text) => {
                out.extend_from_slice(&text.as_bytes());
                Ok(true)
            }
            Value::Integer(_) | Value::Number(_) => {
                let text = number_text(lua, value)?;
                out.extend_from_slice(&text.as_bytes());
                Ok(true)
            }
            other => Err(script_error(lua, &format!("invalid replacement value (a {})", type_name(&other)))),
        }
    }
}

/// An error a function `gsub` called raised with a string: raised on as
/// that string (as Lua would), not wrapped. Other errors (the budget's, a
/// Rust function's) go on as they are.
fn unwrap_script(e: mlua::Error) -> Failure {
    match e {
        mlua::Error::RuntimeError(text) => {
            let message = text.split_once("\nstack traceback:").map_or(text.as_str(), |(m, _)| m);
            Failure::Script(message.to_owned())
        }
        other => Failure::Raised(other),
    }
}

fn position(at: usize) -> Value {
    Value::Integer(i64::try_from(at).unwrap_or(i64::MAX))
}

fn capture_value(lua: &Lua, src: &[u8], capture: Capture) -> mlua::Result<Value> {
    match capture {
        Capture::Text(r) => lua.create_string(&src[r]).map(Value::String),
        Capture::Position(p) => Ok(position(p)),
    }
}

/// A match that did not finish: the pattern's error, as a script error, or the budget's.
fn stopped(lua: &Lua, stop: Stop) -> Failure {
    match stop {
        Stop::Pattern(message) => script_error(lua, &message),
        Stop::Meter(message) => Failure::Raised(mlua::Error::runtime(message)),
    }
}

fn too_long(lua: &Lua) -> Failure {
    script_error(
        lua,
        &format!(
            "string.gsub: the result is over {GSUB_RESULT} bytes (the frame limit); replace in smaller pieces of the text"
        ),
    )
}

/// The budget's error for a match past the call's time `spent`: the
/// function, the pattern, and how to write it differently.
fn overdue(lua: &Lua, name: &str, pattern: &[u8], len: usize, spent: &str) -> String {
    const SHOWN: usize = 60;
    let shown = String::from_utf8_lossy(&pattern[..pattern.len().min(SHOWN)]);
    let more = if pattern.len() > SHOWN { "..." } else { "" };
    format!(
        "{}string.{name}: the pattern \"{shown}{more}\" on {len} bytes of text stopped after {spent} \
         (the time one call may take): repetitions that can take the same characters (.- then %s*, or \
         (.-)(.-)) try every way to share them; anchor the pattern (^), make each repetition take only \
         what the next cannot (%S+, [^,]*), or cut the text first (s:sub(1, 10000))",
        limits::script_place(lua, 1)
    )
}

/// An error of the script's own, with the place Lua gives it: the line that
/// called the function (level 2: level 1 is the Lua half).
fn script_error(lua: &Lua, message: &str) -> Failure {
    let place = lua
        .inspect_stack(2, |d| match (d.source().short_src, d.current_line()) {
            (Some(src), Some(line)) => format!("{src}:{line}: "),
            _ => String::new(),
        })
        .unwrap_or_default();
    Failure::Script(format!("{place}{message}"))
}

/// "bad argument #2 to 'match' (string expected, got nil)", counted as Lua
/// counts it (`s:match(1)`'s pattern is argument #1).
fn argument_error(lua: &Lua, n: usize, name: &str, message: &str) -> Failure {
    let (called, method) = lua
        .inspect_stack(1, |d| {
            let names = d.names();
            (names.name.map(std::borrow::Cow::into_owned), names.name_what == Some("method"))
        })
        .unwrap_or((None, false));
    let called = called.unwrap_or_else(|| format!("string.{name}"));
    if method {
        if n == 1 {
            return script_error(lua, &format!("calling '{called}' on bad self ({message})"));
        }
        return script_error(lua, &format!("bad argument #{} to '{called}' ({message})", n - 1));
    }
    script_error(lua, &format!("bad argument #{n} to '{called}' ({message})"))
}

/// Lua's name of a value's type in an argument error.
fn type_name(v: &Value) -> String {
    let named = match v {
        Value::Table(t) => t.metatable().and_then(|mt| mt.raw_get::<mlua::String>("__name").ok()),
        Value::UserData(u) => u.metatable().ok().and_then(|mt| mt.get::<mlua::String>("__name").ok()),
        _ => None,
    };
    if let Some(name) = named {
        return name.to_string_lossy();
    }
    match v {
        Value::LightUserData(_) => "light userdata".to_owned(),
        Value::Integer(_) | Value::Number(_) => "number".to_owned(),
        Value::Error(_) | Value::UserData(_) | Value::Other(..) => "userdata".to_owned(),
        other => other.type_name().to_owned(),
    }
}

/// A number as Lua writes it (`12`, `12.5`), where Lua takes a number for a string.
fn number_text(lua: &Lua, number: Value) -> mlua::Result<mlua::String> {
    lua.coerce_string(number)?.ok_or_else(|| mlua::Error::runtime("a number Lua could not write as text"))
}

/// Argument `n` (from 1) as a string; a number is turned into one, as Lua does.
fn string_arg(lua: &Lua, args: &MultiValue, n: usize, name: &str) -> Result<mlua::String, Failure> {
    match args.get(n - 1) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Integer(_) | Value::Number(_))) => Ok(number_text(lua, v.clone())?),
        Some(v) => Err(argument_error(lua, n, name, &format!("string expected, got {}", type_name(v)))),
        None => Err(argument_error(lua, n, name, "string expected, got no value")),
    }
}

/// Optional integer argument `n`: `default` when absent or nil; a float
/// with an integer value or a numeric string counts, as Lua does.
fn integer_arg(lua: &Lua, args: &MultiValue, n: usize, name: &str, default: i64) -> Result<i64, Failure> {
    let v = match args.get(n - 1) {
        None | Some(Value::Nil) => return Ok(default),
        Some(Value::Integer(i)) => return Ok(*i),
        Some(v) => v.clone(),
    };
    if let Some(i) = lua.coerce_integer(v.clone())? {
        return Ok(i);
    }
    if lua.coerce_number(v.clone())?.is_some() {
        return Err(argument_error(lua, n, name, "number has no integer representation"));
    }
    Err(argument_error(lua, n, name, &format!("number expected, got {}", type_name(&v))))
}
