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
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
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
}
