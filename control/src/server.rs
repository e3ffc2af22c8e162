//! The control socket server: one thread per client (bounded), one request
//! per line, every request forwarded to the engine thread.

use crate::{persist, MAX_LINE};
use dataplane::api::{Reply, Request};
use dataplane::config::Config;
use dataplane::engine::EngineHandle;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most clients served at once; more are answered with an error and closed.
pub const MAX_CLIENTS: usize = 256;
/// A client idle this long between requests is disconnected.
const IDLE: Duration = Duration::from_secs(600);
/// A request must arrive whole within this long of its first byte: a client
/// that dribbles bytes cannot hold a slot for ever.
pub const LINE_DEADLINE: Duration = Duration::from_secs(10);
/// A client that does not read its answers for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a `trace --live` waits for its frames.
const LIVE_WAIT: Duration = Duration::from_secs(80);
/// How often a waiting read looks at its deadlines.
const TICK: Duration = Duration::from_millis(500);

enum ReadError {
    Closed,
    TooLong,
    TooSlow,
}

/// Reads one request line (up to and without its newline) into `line`:
/// at most [`MAX_LINE`] bytes, whole within [`LINE_DEADLINE`] of its first
/// byte, after at most [`IDLE`] of silence.
fn read_request(r: &mut BufReader<UnixStream>, line: &mut Vec<u8>) -> Result<(), ReadError> {
    let waiting = std::time::Instant::now();
    let mut started: Option<std::time::Instant> = None;
    loop {
        let buf = match r.fill_buf() {
            Ok([]) => return Err(ReadError::Closed),
            Ok(b) => b,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                match started {
                    Some(t) if t.elapsed() > LINE_DEADLINE => return Err(ReadError::TooSlow),
                    None if waiting.elapsed() > IDLE => return Err(ReadError::Closed),
                    _ => continue,
                }
            }
            Err(_) => return Err(ReadError::Closed),
        };
        let t = *started.get_or_insert_with(std::time::Instant::now);
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let complete = done > chunk.len();
        if line.len() + chunk.len() > MAX_LINE {
            return Err(ReadError::TooLong);
        }
        line.extend_from_slice(chunk);
        r.consume(done);
        if complete {
            return Ok(());
        }
        if t.elapsed() > LINE_DEADLINE {
            return Err(ReadError::TooSlow);
        }
    }
}

pub struct Server {
    pub handle: EngineHandle,
    /// `--config` file, the default target of `save`.
    pub config_path: Option<PathBuf>,
}

impl Server {
    /// Accepts clients forever (the process exits around it).
    pub fn serve(self, listener: UnixListener) {
        let me = Arc::new(self);
        let active = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            let mut stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                active.fetch_sub(1, Ordering::SeqCst);
                let _ = write_reply(&mut stream, Err("too many control clients".into()));
                continue;
            }
            let me = me.clone();
            let active = active.clone();
            let spawned = std::thread::Builder::new()
                .name("vswitch-ctl".into())
                .spawn(move || {
                    me.client(stream);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a client thread: {e}");
            }
        }
    }

    fn client(&self, stream: UnixStream) {
        // Short reads, so that deadlines are checked while a client is slow.
        let _ = stream.set_read_timeout(Some(TICK));
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        let _ = out.set_write_timeout(Some(WRITE_TIMEOUT));
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_request(&mut reader, &mut line) {
                Ok(()) => {}
                Err(ReadError::Closed) => return,
                Err(ReadError::TooLong) => {
                    let _ = write_reply(
                        &mut out,
                        Err(format!("request longer than {MAX_LINE} bytes")),
                    );
                    return;
                }
                Err(ReadError::TooSlow) => {
                    let _ = write_reply(
                        &mut out,
                        Err(format!(
                            "request not completed within {} s",
                            LINE_DEADLINE.as_secs()
                        )),
                    );
                    return;
                }
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let result = match serde_json::from_str::<Request>(text) {
                // Written as it is serialized: no value tree per entry.
                Ok(Request::FdbShow { bridge }) => {
                    if write_rows(&mut out, self.handle.fdb_rows(&bridge)).is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Request::TraceLive { count, port }) => {
                    self.trace_live(count as usize, port.as_deref())
                }
                Ok(Request::Capture { port, dir, count }) => {
                    self.capture(&port, dir.as_deref(), count, out, reader);
                    return;
                }
                Ok(Request::Monitor { kinds }) => {
                    self.monitor(&kinds, out, reader);
                    return;
                }
                Ok(req) => self.dispatch(req),
                Err(e) => Err(format!("bad request: {e}")),
            };
            if write_reply(&mut out, result).is_err() {
                return;
            }
        }
    }

    /// `trace --live`: waits for the records (at most [`LIVE_WAIT`]; the
    /// client waits 90 s) and answers them as one array.
    fn trace_live(&self, count: usize, port: Option<&str>) -> Result<Value, String> {
        let rx = self.handle.live_trace(port, count)?;
        let deadline = std::time::Instant::now() + LIVE_WAIT;
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) => got.push(v),
                Err(_) => break,
            }
        }
        self.handle.end_live_trace();
        Ok(Value::Array(got))
    }

    /// Streams captured frames as JSON lines (`{"ts_ns", "dir", "data"}`,
    /// data in hex) until `count` were sent or the client goes away; ends
    /// with `{"end": true, "lost": N}`.
    fn capture(
        &self,
        port: &str,
        dir: Option<&str>,
        count: Option<u64>,
        mut out: UnixStream,
        reader: BufReader<UnixStream>,
    ) {
        let (rx, tx) = match dir.unwrap_or("both") {
            "rx" => (true, false),
            "tx" => (false, true),
            "both" => (true, true),
            other => {
                let _ = write_reply(&mut out, Err(format!("--dir {other}: rx, tx or both")));
                return;
            }
        };
        let cap = match self.handle.capture(port, rx, tx) {
            Ok(c) => c,
            Err(e) => {
                let _ = write_reply(&mut out, Err(e));
                return;
            }
        };
        if write_reply(&mut out, Ok(Value::Null)).is_err() {
            return;
        }
        let Some(gone) = watch_hangup(reader, "vswitch-cap") else {
            return;
        };
        let mut sent = 0u64;
        while !gone.load(Ordering::SeqCst) && count.is_none_or(|c| sent < c) {
            match cap.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(r) => {
                    let hex = to_hex(&r.data);
                    let mut line = json!({
                        "ts_ns": r.ts_ns,
                        "dir": if r.tx { "tx" } else { "rx" },
                        "data": hex,
                    })
                    .to_string();
                    line.push('\n');
                    if out.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    sent += 1;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        let lost = cap.lost.load(Ordering::Relaxed);
        drop(cap);
        self.handle.prune_captures();
        let mut end = json!({"end": true, "lost": lost}).to_string();
        end.push('\n');
        let _ = out.write_all(end.as_bytes());
        let _ = out.shutdown(std::net::Shutdown::Both);
    }

    /// Streams events as JSON lines until the client closes the connection
    /// (seen by a thread reading the rest of its input) or a write fails.
    fn monitor(&self, kinds: &[String], mut out: UnixStream, reader: BufReader<UnixStream>) {
        let kinds = match dataplane::engine::monitor::Kinds::parse(kinds) {
            Ok(k) => k,
            Err(e) => {
                let _ = write_reply(&mut out, Err(e));
                return;
            }
        };
        let sub = self.handle.monitor(kinds);
        if write_reply(&mut out, Ok(Value::Null)).is_err() {
            return;
        }
        let Some(gone) = watch_hangup(reader, "vswitch-mon") else {
            return;
        };
        while !gone.load(Ordering::SeqCst) {
            match sub.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(mut line) => {
                    line.push('\n');
                    if out.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        // Ends the watcher if the client is still connected.
        let _ = out.shutdown(std::net::Shutdown::Both);
    }

    fn dispatch(&self, req: Request) -> Result<Value, String> {
        match req {
            Request::Save { file } => self.save(file),
            other => self.handle.call(other),
        }
    }

    fn save(&self, file: Option<String>) -> Result<Value, String> {
        let path = match (file, &self.config_path) {
            (Some(f), _) => PathBuf::from(f),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err("no file given and vswitchd was started without --config".into())
            }
        };
        let v = self.handle.call(Request::GetConfig)?;
        let cfg: Config = serde_json::from_value(v).map_err(|e| e.to_string())?;
        persist::save(&path, &cfg).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(json!({"file": path.display().to_string()}))
    }
}

/// Reads (and throws away) the rest of a streaming client's input on a
/// thread of its own; the flag turns true when the client hangs up.
fn watch_hangup(
    mut reader: BufReader<UnixStream>,
    name: &str,
) -> Option<Arc<std::sync::atomic::AtomicBool>> {
    let _ = reader.get_ref().set_read_timeout(None);
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g = gone.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut sink = [0u8; 256];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            g.store(true, Ordering::SeqCst);
        })
        .ok()?;
    Some(gone)
}

/// Lower-case hex of `data`, in one allocation.
fn to_hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * data.len());
    for &b in data {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Writes `{"ok":true,"result":[...]}` serializing the rows straight into
/// the socket (buffered), or the error reply.
fn write_rows(
    out: &mut UnixStream,
    r: Result<dataplane::engine::FdbRows, String>,
) -> std::io::Result<()> {
    let rows = match r {
        Ok(rows) => rows,
        Err(e) => return write_reply(out, Err(e)),
    };
    #[derive(serde::Serialize)]
    struct RowsReply<'a> {
        ok: bool,
        result: &'a dataplane::engine::FdbRows,
    }
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    serde_json::to_writer(
        &mut w,
        &RowsReply {
            ok: true,
            result: &rows,
        },
    )
    .map_err(std::io::Error::other)?;
    w.write_all(b"\n")?;
    w.flush()
}

fn write_reply(out: &mut UnixStream, r: Result<Value, String>) -> std::io::Result<()> {
    let mut s = serde_json::to_string(&Reply::from_result(r))
        .unwrap_or_else(|_| r#"{"ok":false,"error":"unserializable reply"}"#.to_string());
    s.push('\n');
    out.write_all(s.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex() {
        assert_eq!(super::to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(super::to_hex(&[]), "");
    }
}
