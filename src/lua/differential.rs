//! The same language: random patterns from Lua's grammar (and random bytes
//! that are mostly not patterns at all) over random short subjects, through
//! Lua's own C `string.find`, `match`, `gmatch` and `gsub` and through
//! mcc's ([`super::strings`]), now and then with an argument of the wrong
//! kind; the results, or the error messages with their `file:line:`, must
//! be equal. Bounded by proptest's case count
//! (`PROPTEST_CASES` raises it).

use mlua::{Function, Lua, Table};
use proptest::prelude::*;

use super::limits::{Budget, Limits};
use super::strings;

/// Runs one operation through a table of the four functions, under `pcall`,
/// and describes what came back (types and values) or the error. No call is
/// a tail call, so an error's place is this chunk's line in both.
const HARNESS: &str = r"
return function(F, op, s, p, init, plain, repl, max, odd)
  -- Arguments of the wrong kind, which Lua turns or refuses.
  if odd == 1 then s = 12.5 elseif odd == 2 then p = {} elseif odd == 3 then init = '2'
  elseif odd == 4 then init = 1.5 elseif odd == 5 then init = 'x' elseif odd == 6 then repl = true
  elseif odd == 7 then max = 2.5 elseif odd == 8 then s = 42 elseif odd == 9 then p = 7 end
  local function call()
    if op == 'find' then local r = table.pack(F.find(s, p, init, plain)); return r
    elseif op == 'match' then local r = table.pack(F.match(s, p, init)); return r
    elseif op == 'gmatch' then
      local r = { n = 0 }
      for a, b in F.gmatch(s, p, init) do
        r.n = r.n + 1; r[r.n] = tostring(a) .. ',' .. tostring(b)
        if r.n > 40 then break end
      end
      return r
    else
      local rp = repl
      if repl == 'TABLE' then rp = { a = 'X', b = false, ab = 7, [1] = 'one' }
      elseif repl == 'FUNCTION' then
        rp = function(a, b) if a == 'b' then return nil end return '<' .. tostring(a) .. '.' .. tostring(b) .. '>' end
      end
      local r = table.pack(F.gsub(s, p, rp, max)); return r
    end
  end
  local ok, r = pcall(call)
  if not ok then return 'error: ' .. tostring(r) end
  local out = {}
  for i = 1, r.n do out[i] = (math.type(r[i]) or type(r[i])) .. ':' .. tostring(r[i]) end
  return table.concat(out, ' | ')
end
";

/// A Lua state with both sets of functions: `c` (Lua's, kept before mcc's
/// replaced them) and `string` (mcc's), and the harness.
struct Both {
    _lua: Lua,
    c: Table,
    mcc: Table,
    harness: Function,
}

impl Both {
    fn new() -> Self {
        let lua = Lua::new();
        let string: Table = lua.globals().get("string").unwrap();
        let c = lua.create_table().unwrap();
        for name in ["find", "match", "gmatch", "gsub"] {
            c.set(name, string.get::<Function>(name).unwrap()).unwrap();
        }
        // Never started: no deadline, the functions just run.
        strings::install(&lua, &Budget::new(Limits::default())).unwrap();
        let harness = lua.load(HARNESS).set_name("@harness.lua").eval().unwrap();
        Self { _lua: lua, c, mcc: string, harness }
    }

    fn both(&self, case: &Case) -> (String, String) {
        let run = |fns: &Table| {
            self.harness
                .call::<String>((
                    fns,
                    case.op,
                    mlua::BString::from(case.subject.clone()),
                    mlua::BString::from(case.pattern.clone()),
                    case.init,
                    case.plain,
                    case.repl.clone(),
                    case.max,
                    case.odd,
                ))
                .unwrap()
        };
        (run(&self.c), run(&self.mcc))
    }
}

#[derive(Debug, Clone)]
struct Case {
    op: &'static str,
    subject: Vec<u8>,
    pattern: Vec<u8>,
    init: Option<i64>,
    plain: Option<bool>,
    repl: String,
    max: Option<i64>,
    /// Which argument is of an odd kind (a number for a string, a string for a number, ...), if 1 to 9.
    odd: u8,
}

/// One single-character class.
fn class() -> impl Strategy<Value = String> {
    prop_oneof![
        "[abc ()%.x-]".prop_map(|c| if "().%-".contains(&c) { format!("%{c}") } else { c }),
        Just(".".to_owned()),
        "%[acdglpsuwxzACDGLPSUWX.%]".prop_map(String::from),
        set(),
    ]
}

fn set() -> impl Strategy<Value = String> {
    let member = prop_oneof!["[abc]", "[a-c]-[b-z]", "%[adsw]", "[]^%-]"];
    (any::<bool>(), proptest::collection::vec(member, 0..4))
        .prop_map(|(not, members)| format!("[{}{}]", if not { "^" } else { "" }, members.concat()))
}

/// A pattern item: a class with an optional repetition, a capture, a
/// back-reference, a balance or a frontier.
fn item() -> impl Strategy<Value = String> {
    let single = (class(), "[*+?-]?").prop_map(|(c, q)| c + &q);
    single.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            4 => inner.clone(),
            1 => proptest::collection::vec(inner.clone(), 0..3).prop_map(|items| format!("({})", items.concat())),
            1 => Just("()".to_owned()),
            1 => "%[0-3]".prop_map(String::from),
            1 => "%b[(a][)b]".prop_map(String::from),
            1 => set().prop_map(|s| format!("%f{s}")),
        ]
    })
}

fn pattern() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // From the grammar, anchored or not.
        ("\\^?", proptest::collection::vec(item(), 0..5), "\\$?").prop_map(|(a, items, z)| format!(
            "{a}{}{z}",
            items.concat()
        )
        .into_bytes()),
        // Anything: mostly malformed, some plain.
        proptest::collection::vec(proptest::sample::select(b"ab^$*+?.()[]%-19bf ".to_vec()), 0..8),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(vec!["find", "match", "gmatch", "gsub"]),
        proptest::collection::vec(proptest::sample::select(b"aabbc ()[]%.-x\n\x0b\0".to_vec()), 0..12),
        pattern(),
        proptest::option::of(-6i64..14),
        proptest::option::of(any::<bool>()),
        prop_oneof!["[ab%0-3x]{0,4}", Just("TABLE".to_owned()), Just("FUNCTION".to_owned())],
        proptest::option::of(-1i64..4),
        0u8..30,
    )
        .prop_map(|(op, subject, pattern, init, plain, repl, max, odd)| Case {
            op,
            subject,
            pattern,
            init,
            plain,
            repl,
            max,
            odd,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_pattern_function_answers_as_lua_s_own(case in case()) {
        thread_local! { static BOTH: Both = Both::new(); }
        let (c, mcc) = BOTH.with(|both| both.both(&case));
        prop_assert_eq!(c, mcc, "{:?}", case);
    }
}

#[test]
fn the_pattern_idioms_of_the_manual_answer_as_lua_s_own() {
    let both = Both::new();
    for (op, subject, pattern, repl) in [
        ("gsub", "hello world", "(%w+)", "%1 %1"),
        ("gsub", "hello world", "%w+", "%0 %0"),
        ("gsub", "hello world from Lua", "(%w+)%s*(%w+)", "%2 %1"),
        ("gsub", "abc", "", "-"),
        ("gsub", "hello world", "o", "%"),
        ("gsub", "hello world", "o", "%9"),
        ("gmatch", "hello world from Lua", "%a+", ""),
        ("gmatch", "from=world, to=Lua", "(%w+)=(%w+)", ""),
        ("gmatch", "^a^a", "^a", ""),
        ("find", "THE (quick) fox", "%f[%a]%a+", ""),
        ("match", "  trim me  ", "^%s*(.-)%s*$", ""),
        ("match", "[[nested]]", "%b[]", ""),
        ("match", "x", "(()", ""),
        ("find", "a.b", ".", ""),
        ("match", "key = value", "(%w+)%s*=%s*(%w+)", ""),
    ] {
        let case = Case {
            op,
            subject: subject.into(),
            pattern: pattern.into(),
            init: None,
            plain: None,
            repl: repl.to_owned(),
            max: None,
            odd: 0,
        };
        let (c, mcc) = both.both(&case);
        assert_eq!(c, mcc, "{case:?}");
    }
}
