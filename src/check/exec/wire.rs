//! The lines of the driver protocol (`docs/PROTOCOL.md`, version 1): what a role may write,
//! parsed and checked field by field, and the commands the harness writes.

use serde_json::{Map, Value};

use crate::check::history::{Delivery, ID_LEN};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// The longest line a role may write, in bytes (its `\n` excluded).
pub const MAX_LINE: usize = 64 * 1024;

/// The longest message a `received` line may carry whole, as `data`.
pub const MAX_DATA: usize = 4096;

/// Which role a process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleId {
    /// The receiver.
    Receiver,
    /// Sender `i`.
    Sender(u32),
}

impl std::fmt::Display for RoleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoleId::Receiver => write!(f, "receiver"),
            RoleId::Sender(i) => write!(f, "sender {i}"),
        }
    }
}

/// A line a role wrote, checked against the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The first line of a role.
    Hello {
        /// The role it claims.
        role: RoleId,
        /// Its process id, as it says.
        pid: i32,
        /// It asks for each message's bytes in `send` commands.
        data: bool,
    },
    /// A sender is about to send message `seq`.
    Sending(u32),
    /// A sender's send of message `seq` returned successfully.
    Sent(u32),
    /// A sender's send of message `seq` failed.
    SendFailed {
        /// The message.
        seq: u32,
        /// The error, as the program put it.
        error: String,
        /// The error means the receiver is gone.
        disconnected: bool,
    },
    /// The receiver is about to receive its message number `got`.
    Receiving(u32),
    /// The receiver got a message.
    Received(Delivery),
    /// End of stream.
    Eos,
    /// The stream ended inside a message.
    CutOff(String),
    /// A receive failed.
    RecvFailed(String),
    /// The receiver closed its end, as told.
    Closed,
    /// The role's last line.
    Bye,
}

/// A line and its time (`t`, `CLOCK_MONOTONIC` ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// The line.
    pub line: Line,
    /// When the role wrote it.
    pub t: u64,
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    obj.get(name)
        .ok_or_else(|| format!("the line has no \"{name}\" field"))
}

fn uint(obj: &Map<String, Value>, name: &str, max: u64) -> Result<u64, String> {
    match field(obj, name)?.as_u64() {
        Some(v) if v <= max => Ok(v),
        _ => Err(format!(
            "\"{name}\" must be an integer from 0 to {max}, not {}",
            obj[name]
        )),
    }
}

fn text(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    match field(obj, name)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("\"{name}\" must be a string, not {other}")),
    }
}

fn flag(obj: &Map<String, Value>, name: &str) -> Result<bool, String> {
    match obj.get(name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("\"{name}\" must be true or false, not {other}")),
    }
}

/// Decodes hex (either case) into bytes.
pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", b.len()));
    }
    let digit = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("{:?} is not a hex digit", c as char)),
        }
    };
    b.chunks(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Encodes bytes as lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[usize::from(x >> 4)] as char);
        s.push(D[usize::from(x & 15)] as char);
    }
    s
}

/// Parses one line a role wrote (without its `\n`). The error says what is wrong with it.
pub fn parse(bytes: &[u8]) -> Result<Stamped, String> {
    let text_line = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let value: Value =
        serde_json::from_str(text_line).map_err(|e| format!("not a JSON object: {e}"))?;
    let Value::Object(obj) = value else {
        return Err(format!("not a JSON object but {value}"));
    };
    let t = uint(&obj, "t", u64::MAX)?;
    let seq = |obj: &Map<String, Value>| uint(obj, "seq", u64::from(u32::MAX)).map(|v| v as u32);
    let line = if let Some(role) = obj.get("hello") {
        let role = match role.as_str() {
            Some("receiver") => RoleId::Receiver,
            Some("sender") => RoleId::Sender(uint(&obj, "index", u64::from(u32::MAX))? as u32),
            _ => {
                return Err(format!(
                    "\"hello\" must be \"sender\" or \"receiver\", not {role}"
                ))
            }
        };
        let protocol = uint(&obj, "protocol", u64::MAX)?;
        if protocol != PROTOCOL_VERSION {
            return Err(format!(
                "the role speaks protocol {protocol}; this harness speaks {PROTOCOL_VERSION}"
            ));
        }
        let pid = uint(&obj, "pid", i32::MAX as u64)? as i32;
        if pid == 0 {
            return Err("\"pid\" must be a process id, not 0".into());
        }
        Line::Hello {
            role,
            pid,
            data: flag(&obj, "data")?,
        }
    } else {
        let ev = match field(&obj, "ev")? {
            Value::String(s) => s.as_str(),
            other => return Err(format!("\"ev\" must be a string, not {other}")),
        };
        match ev {
            "sending" => Line::Sending(seq(&obj)?),
            "sent" => Line::Sent(seq(&obj)?),
            "send_failed" => Line::SendFailed {
                seq: seq(&obj)?,
                error: text(&obj, "error")?,
                disconnected: flag(&obj, "disconnected")?,
            },
            "receiving" => Line::Receiving(uint(&obj, "got", u64::from(u32::MAX))? as u32),
            "received" => Line::Received(delivery(&obj)?),
            "eos" => Line::Eos,
            "cut_off" => Line::CutOff(text(&obj, "error")?),
            "recv_failed" => Line::RecvFailed(text(&obj, "error")?),
            "closed" => Line::Closed,
            "bye" => Line::Bye,
            other => return Err(format!("unknown event \"{other}\"")),
        }
    };
    Ok(Stamped { line, t })
}

/// The delivery a `received` line describes: from `data`, or from `len`, `crc` and `id`
/// (all checked against `data` when both are given).
fn delivery(obj: &Map<String, Value>) -> Result<Delivery, String> {
    if let Some(data) = obj.get("data") {
        let Value::String(hex) = data else {
            return Err(format!("\"data\" must be a hex string, not {data}"));
        };
        if hex.len() > 2 * MAX_DATA {
            return Err(format!(
                "\"data\" carries {} bytes; at most {MAX_DATA} may be sent whole (give len, crc and id)",
                hex.len() / 2
            ));
        }
        let bytes = from_hex(hex).map_err(|e| format!("\"data\": {e}"))?;
        let d = Delivery::of(&bytes);
        // Given both ways, they must agree.
        if obj.contains_key("len") || obj.contains_key("crc") || obj.contains_key("id") {
            let other = described(obj)?;
            if other != d {
                return Err(format!(
                    "\"len\", \"crc\" and \"id\" do not match \"data\" (which is {} bytes, crc {})",
                    d.len, d.crc
                ));
            }
        }
        return Ok(d);
    }
    described(obj)
}

fn described(obj: &Map<String, Value>) -> Result<Delivery, String> {
    let len = uint(obj, "len", u64::from(u32::MAX))? as u32;
    let crc = uint(obj, "crc", u64::from(u32::MAX))? as u32;
    let id = from_hex(&text(obj, "id")?).map_err(|e| format!("\"id\": {e}"))?;
    let want = (len as usize).min(ID_LEN);
    if id.len() != want {
        return Err(format!(
            "\"id\" must be the first {want} bytes of the {len}-byte message, not {} bytes",
            id.len()
        ));
    }
    let mut prefix = [0u8; ID_LEN];
    prefix[..want].copy_from_slice(&id);
    Ok(Delivery { len, crc, prefix })
}

/// The command lines the harness writes, each ended by `\n`.
pub mod command {
    use super::to_hex;

    /// Send message `seq` of `sender`, `len` bytes, under `seed`; with its bytes in hex
    /// when the role asked for them.
    pub fn send(seq: u32, len: usize, sender: u32, seed: u64, data: Option<&[u8]>) -> Vec<u8> {
        let mut s = format!(
            "{{\"op\":\"send\",\"seq\":{seq},\"len\":{len},\"sender\":{sender},\"seed\":\"{seed}\""
        );
        if let Some(d) = data {
            s.push_str(",\"data\":\"");
            s.push_str(&to_hex(d));
            s.push('"');
        }
        s.push_str("}\n");
        s.into_bytes()
    }

    /// Receive up to `count` messages.
    pub fn recv(count: u32) -> Vec<u8> {
        format!("{{\"op\":\"recv\",\"count\":{count}}}\n").into_bytes()
    }

    /// Close the receiving end.
    pub fn close() -> Vec<u8> {
        b"{\"op\":\"close\"}\n".to_vec()
    }

    /// Say bye and exit.
    pub fn exit() -> Vec<u8> {
        b"{\"op\":\"exit\"}\n".to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::{fill_message, MsgId};

    fn p(s: &str) -> Result<Line, String> {
        parse(s.as_bytes()).map(|s| s.line)
    }

    #[test]
    fn the_generator_gives_the_documented_vectors() {
        // docs/PROTOCOL.md section 5: a client in another language checks itself against
        // these, so they must be what the harness generates.
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let cases: [(u64, u32, u32, usize, &str); 5] = [
            (1, 0, 0, 0, ""),
            (1, 0, 0, 3, "42f8bd"),
            (1, 0, 1, 8, "0000000001000000"),
            (42, 3, 7, 21, "0300000007000000decdc9f9f6881c6a079774d7bb"),
            (
                16045690984503111693,
                1,
                65535,
                40,
                "01000000ffff0000a95d179da0275c15b70195ff7344c947ef058dfc788d777fc7593cd2535d090f",
            ),
        ];
        let mut out = Vec::new();
        for (seed, sender, seq, len, hex) in cases {
            fill_message(seed, MsgId { sender, seq }, len, &mut out);
            assert_eq!(to_hex(&out), hex, "gen({seed}, {sender}, {seq}, {len})");
            let row = if hex.is_empty() {
                format!("| {seed} | {sender} | {seq} | {len} | (empty) |")
            } else {
                format!("| {seed} | {sender} | {seq} | {len} | `{hex}` |")
            };
            assert!(doc.contains(&row), "PROTOCOL.md lacks the row {row}");
        }
        assert!(doc.contains(&format!(
            "crc32c(\"123456789\") = {}",
            crc32c::crc32c(b"123456789")
        )));
        // The worked example of section 4.
        fill_message(
            12345678901234567890,
            MsgId { sender: 0, seq: 3 },
            100,
            &mut out,
        );
        let example = format!(
            "\"len\": 100, \"crc\": {}, \"id\": \"{}\"",
            crc32c::crc32c(&out),
            to_hex(&out[..8])
        );
        assert!(doc.contains(&example), "PROTOCOL.md lacks {example}");
    }

    #[test]
    fn hello_lines_are_checked_field_by_field() {
        assert_eq!(
            p(r#"{"hello":"sender","index":2,"pid":77,"protocol":1,"t":5}"#),
            Ok(Line::Hello {
                role: RoleId::Sender(2),
                pid: 77,
                data: false
            })
        );
        assert_eq!(
            p(r#"{"hello":"receiver","pid":7,"protocol":1,"t":5,"data":true,"extra":[1]}"#),
            Ok(Line::Hello {
                role: RoleId::Receiver,
                pid: 7,
                data: true
            })
        );
        for (line, says) in [
            (
                r#"{"hello":"sender","pid":77,"protocol":1,"t":5}"#,
                "\"index\"",
            ),
            (
                r#"{"hello":"boss","pid":77,"protocol":1,"t":5}"#,
                "\"sender\" or \"receiver\"",
            ),
            (
                r#"{"hello":"receiver","pid":77,"protocol":2,"t":5}"#,
                "protocol 2",
            ),
            (
                r#"{"hello":"receiver","pid":-3,"protocol":1,"t":5}"#,
                "\"pid\"",
            ),
            (
                r#"{"hello":"receiver","pid":0,"protocol":1,"t":5}"#,
                "not 0",
            ),
            (r#"{"hello":"receiver","pid":3,"protocol":1}"#, "\"t\""),
            (
                r#"{"hello":"receiver","pid":3,"protocol":1,"t":5,"data":1}"#,
                "true or false",
            ),
            (r#"["hello"]"#, "not a JSON object"),
            ("{\"hello\":", "not a JSON object"),
            ("\u{0}", "not a JSON object"),
        ] {
            let e = p(line).unwrap_err();
            assert!(e.contains(says), "{line}: {e}");
        }
        assert!(parse(b"\xff{}").unwrap_err().contains("UTF-8"));
        // Roles are named in reports as the forked harness names its processes.
        assert_eq!(RoleId::Sender(3).to_string(), "sender 3");
        assert_eq!(RoleId::Receiver.to_string(), "receiver");
    }

    #[test]
    fn events_are_parsed_and_their_fields_required() {
        assert_eq!(p(r#"{"ev":"sending","seq":4,"t":1}"#), Ok(Line::Sending(4)));
        assert_eq!(p(r#"{"ev":"sent","seq":4,"t":1}"#), Ok(Line::Sent(4)));
        assert_eq!(
            p(r#"{"ev":"send_failed","seq":4,"error":"EPIPE","disconnected":true,"t":1}"#),
            Ok(Line::SendFailed {
                seq: 4,
                error: "EPIPE".into(),
                disconnected: true
            })
        );
        assert_eq!(
            p(r#"{"ev":"receiving","got":0,"t":1}"#),
            Ok(Line::Receiving(0))
        );
        assert_eq!(p(r#"{"ev":"eos","t":1}"#), Ok(Line::Eos));
        assert_eq!(
            p(r#"{"ev":"cut_off","error":"x","t":1}"#),
            Ok(Line::CutOff("x".into()))
        );
        assert_eq!(
            p(r#"{"ev":"recv_failed","error":"y","t":1}"#),
            Ok(Line::RecvFailed("y".into()))
        );
        assert_eq!(p(r#"{"ev":"closed","t":1}"#), Ok(Line::Closed));
        assert_eq!(p(r#"{"ev":"bye","t":1}"#), Ok(Line::Bye));
        for (line, says) in [
            (r#"{"ev":"sent","t":1}"#, "\"seq\""),
            (r#"{"ev":"sent","seq":4294967296,"t":1}"#, "\"seq\""),
            (r#"{"ev":"sent","seq":"4","t":1}"#, "\"seq\""),
            (r#"{"ev":"dance","t":1}"#, "unknown event \"dance\""),
            (r#"{"ev":7,"t":1}"#, "\"ev\" must be a string"),
            (r#"{"t":1}"#, "\"ev\""),
            (r#"{"ev":"send_failed","seq":4,"t":1}"#, "\"error\""),
            (r#"{"ev":"sent","seq":4,"t":-1}"#, "\"t\""),
        ] {
            let e = p(line).unwrap_err();
            assert!(e.contains(says), "{line}: {e}");
        }
    }

    #[test]
    fn a_received_message_is_described_by_its_bytes_or_by_len_crc_and_id() {
        let mut msg = Vec::new();
        fill_message(9, MsgId { sender: 1, seq: 5 }, 100, &mut msg);
        let d = Delivery::of(&msg);
        let by_data = format!(r#"{{"ev":"received","data":"{}","t":3}}"#, to_hex(&msg));
        assert_eq!(p(&by_data), Ok(Line::Received(d)));
        let by_crc = format!(
            r#"{{"ev":"received","len":100,"crc":{},"id":"{}","t":3}}"#,
            d.crc,
            to_hex(&msg[..8])
        );
        assert_eq!(p(&by_crc), Ok(Line::Received(d)));
        // Uppercase hex is hex.
        let upper = by_data.replace(&to_hex(&msg), &to_hex(&msg).to_uppercase());
        assert_eq!(p(&upper), Ok(Line::Received(d)));
        // A short message: id is all of it.
        assert_eq!(
            p(&format!(
                r#"{{"ev":"received","len":2,"crc":{},"id":"0102","t":3}}"#,
                crc32c::crc32c(&[1, 2])
            )),
            Ok(Line::Received(Delivery::of(&[1, 2])))
        );
        let both_wrong = format!(
            r#"{{"ev":"received","data":"{}","len":99,"crc":{},"id":"{}","t":3}}"#,
            to_hex(&msg),
            d.crc,
            to_hex(&msg[..8])
        );
        let big = format!(
            r#"{{"ev":"received","data":"{}","t":3}}"#,
            "00".repeat(4097)
        );
        for (line, says) in [
            (both_wrong.as_str(), "do not match"),
            (big.as_str(), "at most 4096"),
            (r#"{"ev":"received","data":"abc","t":3}"#, "odd number"),
            (r#"{"ev":"received","data":"zz","t":3}"#, "not a hex digit"),
            (r#"{"ev":"received","data":7,"t":3}"#, "hex string"),
            (
                r#"{"ev":"received","len":100,"crc":1,"id":"00","t":3}"#,
                "first 8 bytes",
            ),
            (r#"{"ev":"received","len":100,"id":"00","t":3}"#, "\"crc\""),
            (
                r#"{"ev":"received","len":1,"crc":4294967296,"id":"00","t":3}"#,
                "\"crc\"",
            ),
            (r#"{"ev":"received","t":3}"#, "\"len\""),
        ] {
            let e = p(line).unwrap_err();
            assert!(e.contains(says), "{line}: {e}");
        }
    }

    #[test]
    fn commands_are_one_json_object_per_line() {
        let d = [0xab, 0x01];
        for cmd in [
            command::send(3, 2, 1, u64::MAX, Some(&d)),
            command::send(0, 0, 0, 0, None),
            command::recv(7),
            command::close(),
            command::exit(),
        ] {
            assert_eq!(cmd.last(), Some(&b'\n'));
            assert_eq!(cmd.iter().filter(|&&b| b == b'\n').count(), 1);
            let v: Value = serde_json::from_slice(&cmd).unwrap();
            assert!(v.is_object(), "{v}");
        }
        let v: Value = serde_json::from_slice(&command::send(3, 2, 1, u64::MAX, Some(&d))).unwrap();
        assert_eq!(v["seed"], Value::String(u64::MAX.to_string()));
        assert_eq!(v["data"], "ab01");
        assert_eq!(
            (v["seq"].as_u64(), v["len"].as_u64(), v["sender"].as_u64()),
            (Some(3), Some(2), Some(1))
        );
        assert_eq!(from_hex("ab01"), Ok(d.to_vec()));
    }

    #[test]
    fn data_up_to_4096_bytes_is_taken_and_any_described_field_beside_it_is_checked() {
        let at_limit = format!(
            r#"{{"ev":"received","data":"{}","t":3}}"#,
            "01".repeat(4096)
        );
        assert_eq!(p(&at_limit), Ok(Line::Received(Delivery::of(&[1; 4096]))));
        // One of len, crc or id beside the data, even a right one, must come with the
        // other two and agree with the data: a half description is refused.
        for extra in [r#""len":2"#, r#""crc":1"#, r#""id":"0102""#] {
            let line = format!(r#"{{"ev":"received","data":"0102",{extra},"t":3}}"#);
            assert!(p(&line).is_err(), "{line} was taken");
        }
        let crc = crc32c::crc32c(&[1, 2]);
        let whole =
            format!(r#"{{"ev":"received","data":"0102","len":2,"crc":{crc},"id":"0102","t":3}}"#);
        assert_eq!(p(&whole), Ok(Line::Received(Delivery::of(&[1, 2]))));
    }
}
