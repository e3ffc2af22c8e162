//! Running the `gobgp` CLI with a time limit, so a hung speaker never
//! hangs the agent.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `prog args...`; returns its stdout, or an error with the program,
/// exit status and the first line of its stderr. Killed (by its own PID)
/// after `timeout`.
pub fn run(prog: &str, args: &[String], timeout: Duration) -> Result<String, String> {
    let desc = format!("{prog} {}", args.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{prog}`: {e}"))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{desc}` did not finish within {timeout:?}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("`{desc}`: {e}")),
        }
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    if status.success() {
        Ok(stdout)
    } else {
        let why = stderr
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_string();
        Err(format!("`{desc}` failed ({status}): {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_errors_and_timeout() {
        let t = Duration::from_secs(5);
        assert_eq!(run("echo", &["hi".into()], t).unwrap(), "hi\n");
        let e = run(
            "sh",
            &["-c".into(), "echo 'error: nope' >&2; exit 3".into()],
            t,
        )
        .unwrap_err();
        assert!(e.contains("nope") && e.contains("exit status: 3"), "{e}");
        assert!(run("/nonexistent/prog", &[], t).is_err());
        let e = run("sleep", &["5".into()], Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
    }
}
