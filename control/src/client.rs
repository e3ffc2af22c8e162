//! A blocking client for the control socket.

use dataplane::api::{Reply, Request};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon; the error says what to check.
    pub fn connect(path: &Path) -> Result<Client, String> {
        let s = UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot connect to vswitchd at {}: {e} (is vswitchd running? set --socket or VSWITCH_SOCKET)",
                path.display()
            )
        })?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(90)));
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Client {
            reader: BufReader::new(s),
            writer,
        })
    }

    fn send(&mut self, req: &Request) -> Result<(), String> {
        let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("sending to vswitchd: {e}"))
    }

    /// Sends one request and hands the reply's `result` to `seed` while it is
    /// read from the socket, without holding the reply in memory: `fdb-show`
    /// of a million stations is about 100 MB of JSON, which as a string and
    /// a `Value` tree took the client about 1 GiB. Returns what the seed
    /// made of the result (`None` when the daemon sent none), or the
    /// daemon's error text. Use it for one request per connection: the
    /// reader may have read past the reply.
    pub fn call_streaming<S, T>(&mut self, req: &Request, seed: S) -> Result<Option<T>, String>
    where
        S: for<'de> DeserializeSeed<'de, Value = T>,
    {
        self.send(req)?;
        let mut de = serde_json::Deserializer::from_reader(&mut self.reader);
        let reply = de
            .deserialize_map(ReplyVisitor { seed: Some(seed) })
            .map_err(|e| {
                if e.is_eof() {
                    "vswitchd closed the connection without answering".to_string()
                } else if e.is_io() {
                    format!("reading from vswitchd: {e}")
                } else {
                    format!("unreadable answer from vswitchd: {e}")
                }
            })?;
        match reply {
            (true, result, _) => Ok(result),
            (false, _, err) => Err(err.unwrap_or_else(|| "unknown error".into())),
        }
    }

    /// Sends one request and returns the daemon's result or its error text.
    pub fn call(&mut self, req: &Request) -> Result<Value, String> {
        self.send(req)?;
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
            .map_err(|e| format!("reading from vswitchd: {e}"))?;
        if n == 0 {
            return Err("vswitchd closed the connection without answering".into());
        }
        let reply: Reply = serde_json::from_str(&answer)
            .map_err(|e| format!("unreadable answer from vswitchd: {e}"))?;
        if reply.ok {
            Ok(reply.result.unwrap_or(Value::Null))
        } else {
            Err(reply.error.unwrap_or_else(|| "unknown error".into()))
        }
    }
}

impl Client {
    /// Sends a request whose reply is followed by a stream of lines (a
    /// `monitor`), then hands each line to `each` until the daemon closes the
    /// connection or `each` returns false.
    pub fn call_lines(
        &mut self,
        req: &Request,
        mut each: impl FnMut(&str) -> bool,
    ) -> Result<(), String> {
        self.call(req)?;
        let _ = self.reader.get_ref().set_read_timeout(None);
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err("vswitchd closed the connection".into()),
                Ok(_) => {
                    if !each(line.trim_end()) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(format!("reading from vswitchd: {e}")),
            }
        }
    }
}

/// Reads a reply object `{"ok":..,"result":..,"error":..}`, passing `result`
/// through the seed. Unknown fields are skipped.
struct ReplyVisitor<S> {
    seed: Option<S>,
}

impl<'de, S, T> Visitor<'de> for ReplyVisitor<S>
where
    S: DeserializeSeed<'de, Value = T>,
{
    type Value = (bool, Option<T>, Option<String>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a vswitchd reply object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut ok, mut result, mut error) = (None, None, None);
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                "ok" => ok = Some(map.next_value::<bool>()?),
                "error" => error = map.next_value::<Option<String>>()?,
                "result" => match self.seed.take() {
                    Some(seed) => result = Some(map.next_value_seed(seed)?),
                    None => return Err(serde::de::Error::duplicate_field("result")),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let ok = ok.ok_or_else(|| serde::de::Error::missing_field("ok"))?;
        Ok((ok, result, error))
    }
}
