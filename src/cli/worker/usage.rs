//! What a headless agent's run cost, read from what it printed, for `mcc
//! worker run` to report with the attempt. Three shapes are known:
//!
//! - Claude Code `-p --output-format json` (or `stream-json`): one `result`
//!   object with `total_cost_usd` and `usage` (`input_tokens`,
//!   `cache_creation_input_tokens`, `cache_read_input_tokens`,
//!   `output_tokens`); the last one printed counts.
//! - Codex `exec --json`: JSONL events, a `turn.completed` per turn with
//!   `usage` (`input_tokens`, which include the `cached_input_tokens`, and
//!   `output_tokens`); every turn counts. Codex prints no cost.
//! - mcc's own: a JSON line with `"usage": {"usd": 0.42, "tokens": 1200}`,
//!   such as a script's last line beside its `deliverables`.

use serde_json::Value;

use crate::wire::Usage;

/// The usage `stdout` reports, if it reports any.
pub fn from_output(stdout: &str) -> Option<Usage> {
    let mut claude: Option<Usage> = None;
    let mut codex: Option<Usage> = None;
    let mut own: Option<Usage> = None;
    for line in stdout.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        let Ok(value) = serde_json::from_str::<Value>(line) else { continue };
        if value["type"] == "turn.completed" {
            let usage = &value["usage"];
            let tokens = count(usage, &["input_tokens", "output_tokens"]);
            codex = Some(codex.unwrap_or_default().plus(Usage { usd: None, tokens }));
        } else if value.get("total_cost_usd").is_some() || value["type"] == "result" {
            let usage = &value["usage"];
            let tokens = count(
                usage,
                &["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"],
            );
            claude = Some(Usage { usd: value["total_cost_usd"].as_f64(), tokens });
        } else if let Some(usage) = value.get("usage").filter(|u| u.get("usd").is_some() || u.get("tokens").is_some()) {
            own = Some(Usage { usd: usage["usd"].as_f64(), tokens: usage["tokens"].as_u64() });
        }
    }
    own.or(claude).or(codex).filter(|u| !u.is_empty())
}

/// The sum of the named counts present in `usage`; `None` when none is.
fn count(usage: &Value, fields: &[&str]) -> Option<u64> {
    let present: Vec<u64> = fields.iter().filter_map(|f| usage[*f].as_u64()).collect();
    (!present.is_empty()).then(|| present.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn a_claude_code_print_result_gives_its_cost_and_every_token_it_counts() {
        let usage = from_output(&sample("claude-print.json")).expect("usage");
        assert_eq!(usage.usd, Some(0.421_377_5));
        // Input, cache writes, cache reads and output: 38 + 12874 + 151209 + 2931.
        assert_eq!(usage.tokens, Some(167_052));
    }

    #[test]
    fn a_codex_exec_stream_gives_the_tokens_of_every_turn_and_no_cost() {
        let usage = from_output(&sample("codex-exec.jsonl")).expect("usage");
        assert_eq!(usage.usd, None);
        // Two turns: 24763 + 122 and 25210 + 58 (cached input is part of input).
        assert_eq!(usage.tokens, Some(50_153));
    }

    #[test]
    fn a_script_may_say_its_own_usage_and_output_without_any_says_nothing() {
        let usage = from_output("working\n{\"deliverables\":[\"a.md\"],\"usage\":{\"usd\":0.5,\"tokens\":900}}\n");
        assert_eq!(usage, Some(Usage { usd: Some(0.5), tokens: Some(900) }));
        assert_eq!(from_output("done\n{\"deliverables\":[\"a.md\"]}\n"), None);
        assert_eq!(from_output(""), None);
    }
}
