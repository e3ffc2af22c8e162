//! A blocking client for the control socket.

use dataplane::api::{Reply, Request};
use serde_json::Value;
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

    /// Sends one request and returns the daemon's result or its error text.
    pub fn call(&mut self, req: &Request) -> Result<Value, String> {
        let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("sending to vswitchd: {e}"))?;
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
