//! Turning an mlua error into one line a reader can act on:
//! `workflows/x.lua:12: in accept of phase "review": attempt to index a nil value`,
//! and the wording shared by every "this field is wrong" message.

use mlua::Error;

/// Describe `err`, raised while running `what` (such as `split of phase "a"`)
/// of the workflow in `file`.
pub fn describe(err: &Error, file: &str, what: &str) -> String {
    let (message, traceback) = parts(err);
    let message = message.trim().to_owned();
    // A Lua error carries its place at the front; a Rust callback's error
    // only in the traceback.
    if let Some(loc) = leading_location(&message) {
        let rest = message[loc.len()..].trim_start_matches(':').trim();
        return format!("{loc}: in {what}: {rest}");
    }
    match find_location(&traceback) {
        Some(loc) => format!("{loc}: in {what}: {message}"),
        None => format!("{file}: in {what}: {message}"),
    }
}

/// "unknown field `writes` (did you mean `write`?)", or the list of the
/// fields `what` has when nothing is close.
pub fn unknown_field(key: &str, known: &[&str], what: &str) -> String {
    match closest(key, known) {
        Some(near) => format!("unknown field `{key}` (did you mean `{near}`?)"),
        None => format!("unknown field `{key}`; {what} has {}", known.join(", ")),
    }
}

/// The known name a typo most likely meant: one or two edits away, or the
/// same letters in another case (`Lease` for `lease`).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = key.to_lowercase();
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.min(k.len().saturating_sub(1)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A duration field that does not parse, said without the parser's jargon
/// (humantime says "expected number at 0" for "forever").
pub fn not_a_duration(field: &str, value: &str) -> String {
    format!("{field} `{value}` is not a duration: write a number and a unit, such as \"30m\", \"90s\" or \"2h\"")
}

/// "`name` has the wrong type: expected a string such as "x", got number".
pub fn wrong_type(field: &str, expected: &str, got: &str) -> String {
    format!("`{field}` has the wrong type: expected {expected}, got {got}")
}

/// The innermost message and every traceback text seen on the way.
fn parts(err: &Error) -> (String, String) {
    match err {
        Error::CallbackError { traceback, cause } => {
            let (message, inner) = parts(cause);
            (message, format!("{inner}\n{traceback}"))
        }
        Error::WithContext { context, cause } => {
            let (message, traceback) = parts(cause);
            (format!("{context}: {message}"), traceback)
        }
        Error::RuntimeError(text) => match text.split_once("\nstack traceback:") {
            Some((message, traceback)) => (message.to_owned(), traceback.to_owned()),
            None => (text.clone(), String::new()),
        },
        Error::SyntaxError { message, .. } => (message.clone(), String::new()),
        Error::MemoryError(_) => {
            (format!("memory limit of {} MiB reached", super::limits::MEMORY >> 20), String::new())
        }
        Error::ExternalError(e) => (e.to_string(), String::new()),
        other => {
            let text = other.to_string();
            match text.split_once("\nstack traceback:") {
                Some((message, traceback)) => (message.to_owned(), traceback.to_owned()),
                None => (text, String::new()),
            }
        }
    }
}

/// `path.lua:12` at the very start of `text`.
fn leading_location(text: &str) -> Option<&str> {
    let first = text.split_whitespace().next()?;
    let loc = location_in(first)?;
    text.starts_with(loc).then_some(loc)
}

/// The first `something.lua:N` in `text` (a traceback), skipping `[C]` frames.
pub fn find_location(text: &str) -> Option<String> {
    text.split_whitespace().find_map(location_in).map(str::to_owned)
}

/// `word` up to and including `.lua:N`, if it has that shape.
fn location_in(word: &str) -> Option<&str> {
    let at = word.find(".lua:")?;
    let digits = &word[at + 5..];
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    (len > 0).then(|| &word[..at + 5 + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_is_answered_with_the_field_it_meant() {
        let known = ["id", "description", "write", "read", "lease"];
        assert_eq!(unknown_field("writes", &known, "a task"), "unknown field `writes` (did you mean `write`?)");
        assert_eq!(unknown_field("Lease", &known, "a task"), "unknown field `Lease` (did you mean `lease`?)");
        assert_eq!(
            unknown_field("colour", &known, "a task"),
            "unknown field `colour`; a task has id, description, write, read, lease"
        );
    }

    #[test]
    fn a_lua_error_keeps_its_place_and_names_the_decision() {
        let err = Error::RuntimeError(
            "workflows/x.lua:12: attempt to index a nil value\nstack traceback:\n\t[C]: in ?".into(),
        );
        assert_eq!(
            describe(&err, "workflows/x.lua", "accept of phase \"review\""),
            "workflows/x.lua:12: in accept of phase \"review\": attempt to index a nil value"
        );
    }

    #[test]
    #[allow(clippy::arc_with_non_send_sync)] // mlua's own error type holds the Arc
    fn a_rust_error_takes_its_place_from_the_traceback() {
        let err = Error::CallbackError {
            traceback: "stack traceback:\n\t[C]: in function 'read'\n\twf.lua:3: in function <wf.lua:2>".into(),
            cause: std::sync::Arc::new(Error::RuntimeError("ctx.read: no file x.txt".into())),
        };
        assert_eq!(describe(&err, "wf.lua", "split"), "wf.lua:3: in split: ctx.read: no file x.txt");
    }
}
