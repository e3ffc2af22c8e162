//! Configuration files: load at start, save atomically.

use dataplane::config::Config;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Loads `path`. A missing file is an empty configuration (created on the
/// first save); a malformed one is an error naming file, line and reason.
pub fn load(path: &Path) -> Result<Config, String> {
    match fs::read_to_string(path) {
        Ok(text) => {
            Config::from_toml(&text).map_err(|e| format!("{}: {}", path.display(), e.trim_end()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `cfg` to `path` atomically: a temporary file in the same
/// directory, fsync, rename over the target, fsync the directory. Readers see
/// the old file or the new one, never a torn one.
pub fn save(path: &Path, cfg: &Config) -> io::Result<()> {
    // One save at a time in this process: they share the temporary name.
    static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SAVING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    remove_stale_temps(path);
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let body = format!(
        "# vswitch configuration, written by 'vswitchctl save'\n{}",
        cfg.to_toml()
    );
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Removes the temporary files of saves to `path` that were interrupted
/// (`.NAME.tmp.PID` whose process is gone: killed between write and
/// rename). A save in progress in a live process is left alone. Returns how
/// many went.
pub fn remove_stale_temps(path: &Path) -> usize {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name() else {
        return 0;
    };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let f = e.file_name();
        let f = f.to_string_lossy();
        let Some(pid) = f.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && process_alive(pid) {
            continue;
        }
        if fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Whether process `pid` exists (kill with signal 0: EPERM means it does).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be
    // signalled; nothing is delivered.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::config::{BridgeConfig, PortConfig, PortType};

    #[test]
    fn save_then_load() {
        let dir = std::env::temp_dir().join(format!("vswitch-persist-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vs.toml");
        assert_eq!(
            load(&path).unwrap(),
            Config::default(),
            "missing file is empty"
        );
        let mut b = BridgeConfig::new("br0");
        b.ports.push(PortConfig::new("p1", PortType::Tap));
        let cfg = Config {
            bridges: vec![b],
            ..Config::default()
        };
        save(&path, &cfg).unwrap();
        assert_eq!(load(&path).unwrap(), cfg);
        fs::write(&path, "[[bridge]]\nname = 3\n").unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.contains("vs.toml") && e.contains("line 2"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temps_of_dead_savers_are_removed() {
        let dir = std::env::temp_dir().join(format!("vswitch-stale-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vs.toml");
        // A PID that cannot exist (above pid_max's ceiling), ours, and a
        // live one (pid 1); and files that only look similar.
        let dead = dir.join(".vs.toml.tmp.4194305");
        let mine = dir.join(format!(".vs.toml.tmp.{}", std::process::id()));
        let live = dir.join(".vs.toml.tmp.1");
        let other = dir.join(".other.toml.tmp.4194305");
        let odd = dir.join(".vs.toml.tmp.x");
        for f in [&dead, &mine, &live, &other, &odd] {
            fs::write(f, "partial").unwrap();
        }
        save(&path, &Config::default()).unwrap();
        assert!(!dead.exists() && !mine.exists());
        assert!(live.exists() && other.exists() && odd.exists());
        assert_eq!(load(&path).unwrap(), Config::default());
        fs::remove_dir_all(&dir).unwrap();
    }
}
