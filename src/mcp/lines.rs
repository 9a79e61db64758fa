//! The stdio lines between an MCP client and rmcp, so that every request
//! gets the response JSON-RPC 2.0 prescribes. rmcp 3.11 (its
//! `transport/async_rw.rs` and `ClientRequest`) answers some of them wrongly:
//!
//! - a line that is not JSON gets no response at all (rmcp drops it on
//!   purpose since its PR #940, to spare a client that logs onto stdout an
//!   error storm): here it gets -32700 with `"id": null`, as JSON-RPC's §5
//!   says. A compliant peer never answers a response, so no storm follows;
//! - a request whose `params` is not an object gets -32600 without its `id`:
//!   here -32602 with the request's `id`;
//! - a known method whose params do not fit it (`tools/call` without a
//!   string `name`) is taken for a custom method and gets -32601: here -32602;
//! - a line over rmcp's length limit is dropped unanswered: here it gets
//!   -32600 naming the limit and the size.
//!
//! Every other line passes through unchanged, and everything rmcp writes
//! reaches stdout whole, one line at a time, in the order written.

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, ConstString, JsonRpcMessage};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

/// The longest line taken (rmcp's own limit): a longer one is answered, not read whole.
pub const MAX_LINE: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;

/// The methods a client may call on a server, by the MCP version rmcp speaks.
const KNOWN: [&str; 21] = {
    use rmcp::model::{
        CallToolRequestMethod, CancelTaskMethod, CompleteRequestMethod, DiscoverRequestMethod, GetPromptRequestMethod,
        GetSkillRequestMethod, GetTaskMethod, InitializeResultMethod, ListPromptsRequestMethod,
        ListResourceTemplatesRequestMethod, ListResourcesRequestMethod, ListSkillsRequestMethod,
        ListToolsRequestMethod, PingRequestMethod, ReadResourceDirectoryRequestMethod, ReadResourceRequestMethod,
        SetLevelRequestMethod, SubscribeRequestMethod, SubscriptionsListenRequestMethod, UnsubscribeRequestMethod,
        UpdateTaskMethod,
    };
    [
        PingRequestMethod::VALUE,
        InitializeResultMethod::VALUE,
        DiscoverRequestMethod::VALUE,
        CompleteRequestMethod::VALUE,
        SetLevelRequestMethod::VALUE,
        GetPromptRequestMethod::VALUE,
        ListPromptsRequestMethod::VALUE,
        ListResourcesRequestMethod::VALUE,
        ListResourceTemplatesRequestMethod::VALUE,
        ReadResourceRequestMethod::VALUE,
        SubscriptionsListenRequestMethod::VALUE,
        SubscribeRequestMethod::VALUE,
        UnsubscribeRequestMethod::VALUE,
        CallToolRequestMethod::VALUE,
        ListToolsRequestMethod::VALUE,
        GetTaskMethod::VALUE,
        UpdateTaskMethod::VALUE,
        CancelTaskMethod::VALUE,
        ListSkillsRequestMethod::VALUE,
        GetSkillRequestMethod::VALUE,
        ReadResourceDirectoryRequestMethod::VALUE,
    ]
};

/// JSON-RPC 2.0's codes for the errors answered here.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// What to do with one line from the client.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// rmcp answers it right (or it needs no answer): pass it on.
    Pass,
    /// Answer it here with this response line.
    Answer(String),
    /// Nothing to answer (a blank line).
    Skip,
}

fn error(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// Judge one line (without its newline).
pub fn judge(line: &[u8]) -> Verdict {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Skip;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return Verdict::Answer(error(&Value::Null, PARSE_ERROR, &format!("Parse error: {e}"))),
    };
    let Some(object) = value.as_object() else { return Verdict::Pass };
    let (Some(id), Some(method)) = (object.get("id"), object.get("method").and_then(Value::as_str)) else {
        return Verdict::Pass;
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Verdict::Pass;
    }
    let params_ok = matches!(object.get("params"), None | Some(Value::Object(_)));
    if !params_ok && !KNOWN.contains(&method) {
        return Verdict::Answer(error(id, METHOD_NOT_FOUND, &format!("Method not found: {method}")));
    }
    if !params_ok {
        return Verdict::Answer(error(id, INVALID_PARAMS, &format!("Invalid params: `{method}` takes an object")));
    }
    match serde_json::from_value::<ClientJsonRpcMessage>(value.clone()) {
        Ok(JsonRpcMessage::Request(request)) => match request.request {
            ClientRequest::CustomRequest(custom) if KNOWN.contains(&custom.method.as_str()) => {
                // rmcp could not read the params as this method's, so it fell back to "custom".
                let why = params_error(method, object.get("params"));
                Verdict::Answer(error(id, INVALID_PARAMS, &format!("Invalid params for `{method}`: {why}")))
            }
            _ => Verdict::Pass,
        },
        Ok(_) => Verdict::Pass,
        Err(e) => Verdict::Answer(error(id, INVALID_REQUEST, &format!("Invalid request: {e}"))),
    }
}

/// What is wrong with `params` for `method`, as serde says, where it can.
fn params_error(method: &str, params: Option<&Value>) -> String {
    let params = params.cloned().unwrap_or(Value::Null);
    let why = match method {
        m if m == rmcp::model::CallToolRequestMethod::VALUE => {
            serde_json::from_value::<rmcp::model::CallToolRequestParams>(params).err()
        }
        _ => None,
    };
    why.map_or_else(|| "they do not fit the method's schema".to_owned(), |e| e.to_string())
}

/// rmcp's end of the lines: serve on these as on stdio; [`pump`] joins them to it.
pub struct Ends {
    /// What rmcp reads: the client's lines that passed.
    pub input: DuplexStream,
    /// What rmcp writes: its responses, on their way to the client.
    pub output: DuplexStream,
}

/// Copy `input` to rmcp and rmcp to `output`, answering here what rmcp would
/// answer wrongly. Ends when the client closes `input` and rmcp's output ends.
pub fn pump<R, W>(input: R, output: W) -> (Ends, impl Future<Output = ()>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (rmcp_reads, mut to_rmcp) = tokio::io::duplex(64 * 1024);
    let (rmcp_writes, from_rmcp) = tokio::io::duplex(64 * 1024);
    let (lines, mut to_write) = mpsc::unbounded_channel::<Vec<u8>>();

    let answers = lines.clone();
    let read_client = async move {
        let mut input = BufReader::new(input);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(&mut input, &mut line, MAX_LINE).await {
                Ok(Read::End) | Err(_) => break,
                Ok(Read::Over(size)) => {
                    let what = format!(
                        "Invalid request: the message is over {size} bytes, above the limit of {MAX_LINE} bytes for one line; send a shorter one"
                    );
                    let _ = answers.send(error(&Value::Null, INVALID_REQUEST, &what).into_bytes());
                }
                Ok(Read::Line) => match judge(&line) {
                    Verdict::Pass => {
                        line.push(b'\n');
                        if to_rmcp.write_all(&line).await.is_err() {
                            break;
                        }
                    }
                    Verdict::Answer(answer) => {
                        let _ = answers.send(answer.into_bytes());
                    }
                    Verdict::Skip => {}
                },
            }
        }
        // rmcp sees the end of its input and stops.
        let _ = to_rmcp.shutdown().await;
    };
    let read_rmcp = async move {
        let mut out = BufReader::new(from_rmcp);
        let mut line = Vec::new();
        while matches!(out.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
            let whole = std::mem::take(&mut line);
            let whole = whole.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(whole);
            if lines.send(whole).is_err() {
                break;
            }
        }
    };
    let write = async move {
        let mut output = output;
        while let Some(mut line) = to_write.recv().await {
            line.push(b'\n');
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    };
    let run = async move {
        tokio::spawn(read_client);
        tokio::join!(read_rmcp, write);
    };
    (Ends { input: rmcp_reads, output: rmcp_writes }, run)
}

enum Read {
    Line,
    End,
    /// A line over the limit, read past and dropped: this many bytes.
    Over(usize),
}

/// One line into `line` (without its newline), never holding more than `max` bytes.
async fn read_line<R: AsyncBufReadExt + Unpin>(input: &mut R, line: &mut Vec<u8>, max: usize) -> std::io::Result<Read> {
    let mut over = 0usize;
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if over > 0 {
                Read::Over(over)
            } else if line.is_empty() {
                Read::End
            } else {
                Read::Line
            });
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (at, true),
            None => (buf.len(), false),
        };
        if over > 0 || line.len() + take > max {
            over = over.max(line.len()) + take;
            line.clear();
        } else {
            line.extend_from_slice(&buf[..take]);
        }
        input.consume(take + usize::from(done));
        if done {
            return Ok(if over > 0 { Read::Over(over) } else { Read::Line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(line: &str) -> Value {
        match judge(line.as_bytes()) {
            Verdict::Answer(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn a_line_over_the_limit_is_read_past_and_the_next_line_is_whole() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let text = format!("{}\nshort\n", "x".repeat(100));
            // A small buffer, so the long line arrives in pieces.
            let mut input = BufReader::with_capacity(16, text.as_bytes());
            let mut line = Vec::new();
            assert!(matches!(read_line(&mut input, &mut line, 40).await.unwrap(), Read::Over(100)));
            line.clear();
            assert!(matches!(read_line(&mut input, &mut line, 40).await.unwrap(), Read::Line));
            assert_eq!(line, b"short");
            line.clear();
            assert!(matches!(read_line(&mut input, &mut line, 40).await.unwrap(), Read::End));
        });
    }

    #[test]
    fn what_rmcp_answers_right_passes_and_the_rest_is_answered_here() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"note","arguments":{"x":"--x"}}}"#;
        assert_eq!(judge(call.as_bytes()), Verdict::Pass);
        assert_eq!(judge(br#"{"jsonrpc":"2.0","id":2,"method":"no/such"}"#), Verdict::Pass);
        assert_eq!(judge(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#), Verdict::Pass);
        assert_eq!(judge(br#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#), Verdict::Pass);
        assert_eq!(judge(b"  \r"), Verdict::Skip);

        let broken = answer(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call""#);
        assert_eq!((broken["id"].clone(), broken["error"]["code"].clone()), (Value::Null, json!(-32700)));
        let listed = answer(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":[1]}"#);
        assert_eq!((listed["id"].clone(), listed["error"]["code"].clone()), (json!(5), json!(-32602)));
        let unnamed = answer(r#"{"jsonrpc":"2.0","id":"six","method":"tools/call","params":{"name":5}}"#);
        assert_eq!((unnamed["id"].clone(), unnamed["error"]["code"].clone()), (json!("six"), json!(-32602)));
        assert!(unnamed["error"]["message"].as_str().unwrap().contains("tools/call"), "{unnamed}");
        let unknown = answer(r#"{"jsonrpc":"2.0","id":7,"method":"no/such","params":[1]}"#);
        assert_eq!((unknown["id"].clone(), unknown["error"]["code"].clone()), (json!(7), json!(-32601)));
    }
}
