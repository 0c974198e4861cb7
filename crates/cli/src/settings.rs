//! The user's config directory: `config.toml` (defaults for the URL, the output folder
//! and the concurrency) and `credentials` (the key `runware auth login` stored, 0600).
//!
//! Precedence, for each setting: a flag, then its environment variable, then the file,
//! then the built-in default. The directory is `$RUNWARE_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/runware`, else `~/.config/runware` (`%APPDATA%\runware` on Windows).

use super::error::CliError;
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The defaults `config.toml` may set (every field optional; unknown fields are refused).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// WebSocket URL of the API.
    pub url: Option<String>,
    /// `runware edit` / `runware batch --out`.
    pub out: Option<PathBuf>,
    /// `runware batch --concurrency`.
    pub concurrency: Option<u32>,
}

/// What the config directory holds for this run.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// The directory (None when no home or config directory is known).
    pub dir: Option<PathBuf>,
    /// `config.toml`, or the defaults when there is none.
    pub file: FileConfig,
    /// The stored key, if `auth login` stored one.
    pub api_key: Option<String>,
}

const CONFIG_FILE: &str = "config.toml";
const CREDENTIALS_FILE: &str = "credentials";

impl Settings {
    /// Reads the config directory. A missing directory or file is no error; a file that
    /// cannot be read or parsed is, naming the file and the field.
    pub fn load() -> Result<Settings, CliError> {
        let Some(dir) = config_dir() else { return Ok(Settings::default()) };
        let config_path = dir.join(CONFIG_FILE);
        let file = match std::fs::read_to_string(&config_path) {
            Ok(text) => parse_config(&text, &config_path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
            Err(e) => return Err(CliError::Read { path: config_path, source: e }),
        };
        if let Some(0) = file.concurrency {
            return Err(CliError::Usage(format!("{}: concurrency must be at least 1", config_path.display())));
        }
        let cred_path = dir.join(CREDENTIALS_FILE);
        let api_key = match std::fs::read_to_string(&cred_path) {
            Ok(text) => Some(text.trim().to_string()).filter(|k| !k.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(CliError::Read { path: cred_path, source: e }),
        };
        Ok(Settings { dir: Some(dir), file, api_key })
    }

    /// Where the stored key lives (whether or not there is one).
    pub fn credentials_path(&self) -> Result<PathBuf, CliError> {
        self.dir.as_ref().map(|d| d.join(CREDENTIALS_FILE)).ok_or_else(|| {
            CliError::Usage("no config directory: set RUNWARE_CONFIG_DIR, XDG_CONFIG_HOME or HOME".into())
        })
    }
}

fn parse_config(text: &str, path: &Path) -> Result<FileConfig, CliError> {
    // The full message: the line, the column and the line itself, so the field is named.
    toml::from_str(text).map_err(|e| CliError::Usage(format!("{}: {}", path.display(), e.to_string().trim_end())))
}

/// The config directory of this user, if one can be named.
pub fn config_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("RUNWARE_CONFIG_DIR") {
        return Some(dir);
    }
    if cfg!(windows) {
        return var("APPDATA").map(|d| d.join("runware"));
    }
    var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config"))).map(|d| d.join("runware"))
}

/// Writes `key` to `path` readable by the owner only (0600 on Unix), atomically: a
/// temporary file in the same directory, created with that mode, then renamed over.
pub fn store_key(path: &Path, key: &str) -> Result<(), CliError> {
    let write_err = |source| CliError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let tmp = dir.join(format!(".{CREDENTIALS_FILE}.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = options.open(&tmp).and_then(|mut f| {
        f.write_all(key.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    });
    if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    Ok(())
}

/// A key as `auth status` shows it: its length and last four characters only.
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return format!("{} (set, {} characters)", "*".repeat(8), chars.len());
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{}{tail} ({} characters)", "*".repeat(8), chars.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_shows_at_most_the_last_four_characters() {
        assert_eq!(mask("abcdefghijklmnop"), "********mnop (16 characters)");
        assert_eq!(mask("short"), "******** (set, 5 characters)");
        assert!(!mask("secret-key-123456").contains("secret"));
    }

    #[test]
    fn the_config_file_names_a_bad_field() {
        let err = parse_config("concurency = 3\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("concurency"), "{err}");
        let err = parse_config("concurrency = \"many\"\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("concurrency") || err.contains("integer"), "{err}");
        let ok =
            parse_config("url = \"ws://127.0.0.1:1/v1\"\nout = \"imgs\"\nconcurrency = 8\n", Path::new("c")).unwrap();
        assert_eq!((ok.url.as_deref(), ok.concurrency), (Some("ws://127.0.0.1:1/v1"), Some(8)));
    }
}
