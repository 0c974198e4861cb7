//! `runware auth login|status|logout`: the key stored in the user's config directory
//! (see `settings`), so later commands need neither `--api-key` nor `RUNWARE_API_KEY`.

use super::EXIT_OK;
use super::args::{ApiArgs, AuthArgs, AuthCommand};
use super::embedded::Endpoint;
use super::error::CliError;
use super::output::Output;
use super::settings::{self, Settings};
use runware_ws::client::DEFAULT_URL;
use std::io::{BufRead, IsTerminal};
use std::time::Duration;

/// Where each setting of this run comes from, for `auth status`.
pub struct Sources<'a> {
    /// The flags and environment alone (before the config directory filled in).
    pub given: &'a ApiArgs,
    /// What the config directory holds.
    pub settings: &'a Settings,
}

pub async fn run(args: AuthArgs, sources: Sources<'_>, out: &Output) -> Result<u8, CliError> {
    match args.command {
        AuthCommand::Login => login(sources, out).await,
        AuthCommand::Status => status(sources, out),
        AuthCommand::Logout => logout(sources.settings, out),
    }
}

async fn login(sources: Sources<'_>, out: &Output) -> Result<u8, CliError> {
    let path = sources.settings.credentials_path()?;
    let key = tokio::task::spawn_blocking(read_key)
        .await
        .map_err(|e| CliError::Other(format!("reading the key failed: {e}")))??;
    // A round trip before storing: an authentication with this key at the endpoint
    // later commands will use.
    let url = sources.given.url.clone().or_else(|| sources.settings.file.url.clone());
    let api = ApiArgs {
        url,
        api_key: Some(key.clone()),
        connect_timeout: sources.given.connect_timeout,
        ca_cert: sources.given.ca_cert.clone(),
    };
    let endpoint = Endpoint::resolve(&api, out).await?;
    let client = endpoint.connect(|b| b.max_in_flight(1)).await?;
    client.close(Duration::ZERO).await;
    let stored = path.clone();
    tokio::task::spawn_blocking(move || settings::store_key(&stored, &key))
        .await
        .map_err(|e| CliError::Other(format!("storing the key failed: {e}")))??;
    if out.json {
        out.json_value(&serde_json::json!({ "stored": path, "checkedAt": endpoint.url }));
    } else {
        out.line(&format!("The key authenticated at {}; stored in {} (owner only)", endpoint.url, path.display()));
    }
    Ok(EXIT_OK)
}

/// The key from a prompt that does not echo (on a terminal) or from stdin's first line.
fn read_key() -> Result<String, CliError> {
    let key = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Runware API key: ")
            .map_err(|e| CliError::Other(format!("cannot read the key from the terminal: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Other(format!("cannot read the key from stdin: {e}")))?;
        line
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err(CliError::Usage("auth login: the key is empty (type it at the prompt or pipe it on stdin)".into()));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(CliError::Usage("auth login: a key has no spaces or line breaks inside".into()));
    }
    Ok(key)
}

fn status(sources: Sources<'_>, out: &Output) -> Result<u8, CliError> {
    let Sources { given, settings } = sources;
    let (key, key_source) = match (&given.api_key, &settings.api_key) {
        (Some(k), _) => (Some(k.as_str()), "--api-key or RUNWARE_API_KEY"),
        (None, Some(k)) => (Some(k.as_str()), "the stored key"),
        (None, None) => (None, "none"),
    };
    let (url, url_source) = match (&given.url, &settings.file.url) {
        (Some(u), _) => (u.clone(), "--url or RUNWARE_URL"),
        (None, Some(u)) => (u.clone(), "config.toml"),
        (None, None) if key.is_some() => (DEFAULT_URL.to_string(), "the default"),
        (None, None) => ("the embedded emulator (no key)".to_string(), "no key and no URL"),
    };
    let masked = key.map(settings::mask);
    let dir = settings.dir.as_ref().map(|d| d.display().to_string());
    if out.json {
        out.json_value(&serde_json::json!({
            "key": masked, "keySource": key_source, "endpoint": url, "endpointSource": url_source,
            "configDir": dir, "stored": settings.api_key.is_some(),
        }));
    } else {
        out.line(&format!("key       {} ({key_source})", masked.as_deref().unwrap_or("none")));
        out.line(&format!("endpoint  {url} ({url_source})"));
        out.line(&format!("config    {}", dir.as_deref().unwrap_or("no config directory")));
    }
    Ok(EXIT_OK)
}

fn logout(settings: &Settings, out: &Output) -> Result<u8, CliError> {
    let path = settings.credentials_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => out.line(&format!("Removed the stored key ({})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.line("No key was stored"),
        Err(e) => return Err(CliError::Write { path, source: e }),
    }
    Ok(EXIT_OK)
}
