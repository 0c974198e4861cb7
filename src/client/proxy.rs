//! The WebSocket through an HTTP `CONNECT` proxy.
//!
//! By default the proxy comes from the environment, read at each connect, as curl and
//! reqwest read it: `HTTPS_PROXY` / `https_proxy` for `wss://`, `HTTP_PROXY` / `http_proxy`
//! for `ws://`, then `ALL_PROXY` / `all_proxy`; `NO_PROXY` / `no_proxy` lists hosts that
//! bypass it (`*`, a host, a domain with or without a leading dot, an IP). Credentials in
//! the proxy URL (`http://user:pass@proxy:3128`) become `Proxy-Authorization: Basic`.
//! [`ClientBuilder::proxy`](crate::ClientBuilder::proxy) fixes one instead, and
//! [`ClientBuilder::no_proxy`](crate::ClientBuilder::no_proxy) turns proxies off.
//! TLS to the Runware host runs inside the tunnel, end to end.

use super::error::ConfigError;
use base64::Engine;
use std::fmt;

/// An HTTP proxy that tunnels with `CONNECT`. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    auth: Option<(String, String)>,
    no_proxy: Vec<String>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl Proxy {
    /// A proxy at `url`: `http://[user:pass@]host[:port]` or `host:port` (port 80 when
    /// the URL has none). `https://` proxies (TLS to the proxy itself) are refused.
    pub fn http(url: &str) -> Result<Proxy, ConfigError> {
        let with_scheme = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
        let parsed = url::Url::parse(&with_scheme).map_err(|e| {
            ConfigError::caused_by(format!("proxy URL: {} (expected http://[user:pass@]host:port)", redact(url)), e)
        })?;
        if parsed.scheme() != "http" {
            return Err(ConfigError::new(format!(
                "proxy URL: scheme {}:// is not supported (an HTTP CONNECT proxy is http://host:port)",
                parsed.scheme()
            )));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConfigError::new(format!("proxy URL: {} has no host", redact(url))))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = parsed.port().unwrap_or(80);
        let auth = (!parsed.username().is_empty()).then(|| {
            let decode = |s: &str| percent_decode(s);
            (decode(parsed.username()), decode(parsed.password().unwrap_or("")))
        });
        Ok(Proxy { host, port, auth, no_proxy: Vec::new() })
    }

    /// Authenticates to the proxy with `Proxy-Authorization: Basic`.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Proxy {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Hosts reached directly, not through this proxy (the `NO_PROXY` syntax:
    /// comma-separated hosts, domains, IPs, or `*`).
    pub fn no_proxy(mut self, list: &str) -> Proxy {
        self.no_proxy = parse_no_proxy(list);
        self
    }

    /// `host:port` of the proxy (no credentials), for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The password, for redaction by an application that prints its own logs.
    pub fn password(&self) -> Option<&str> {
        self.auth.as_ref().map(|(_, p)| p.as_str())
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    fn bypasses(&self, host: &str) -> bool {
        matches_no_proxy(&self.no_proxy, host)
    }

    /// The `CONNECT` request for `host:port`.
    pub(crate) fn connect_request(&self, host: &str, port: u16) -> String {
        let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, password)) = &self.auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        request
    }
}

/// Where proxies come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxyPolicy {
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`, read at each connect. The default.
    #[default]
    FromEnvironment,
    /// Always this proxy (except the hosts of its `no_proxy` list).
    Fixed(Proxy),
    /// Never a proxy.
    Disabled,
}

impl ProxyPolicy {
    /// The proxy for a connection to `host` over `scheme` (`ws` or `wss`), if any.
    pub fn proxy_for(&self, scheme: &str, host: &str) -> Result<Option<Proxy>, ConfigError> {
        match self {
            ProxyPolicy::Disabled => Ok(None),
            ProxyPolicy::Fixed(p) => Ok((!p.bypasses(host)).then(|| p.clone())),
            ProxyPolicy::FromEnvironment => {
                let var =
                    |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()));
                let names: &[&str] =
                    if scheme == "wss" { &["HTTPS_PROXY", "https_proxy"] } else { &["HTTP_PROXY", "http_proxy"] };
                let Some(url) = var(names).or_else(|| var(&["ALL_PROXY", "all_proxy"])) else { return Ok(None) };
                let proxy = Proxy::http(url.trim())?.no_proxy(&var(&["NO_PROXY", "no_proxy"]).unwrap_or_default());
                Ok((!proxy.bypasses(host)).then_some(proxy))
            }
        }
    }
}

fn parse_no_proxy(list: &str) -> Vec<String> {
    list.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect()
}

fn matches_no_proxy(list: &[String], host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    list.iter().any(|entry| {
        // An entry may carry a port (`host:8080`): hosts are compared without it.
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => entry.as_str(),
        };
        let entry = entry.trim_start_matches('[').trim_end_matches(']');
        if entry == "*" {
            return true;
        }
        let domain = entry.trim_start_matches('.');
        host == domain || host.ends_with(&format!(".{domain}"))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A proxy URL for messages: the credentials replaced.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_url_gives_host_port_and_decoded_credentials() {
        let p = Proxy::http("http://alice:p%40ss@proxy.corp:3128").unwrap();
        assert_eq!((p.host(), p.port(), p.password()), ("proxy.corp", 3128, Some("p@ss")));
        assert!(!format!("{p:?}").contains("p@ss"), "Debug hides the password");
        let req = p.connect_request("ws-api.runware.ai", 443);
        assert!(req.starts_with("CONNECT ws-api.runware.ai:443 HTTP/1.1\r\nHost: ws-api.runware.ai:443\r\n"));
        // alice:p@ss
        assert!(req.contains("Proxy-Authorization: Basic YWxpY2U6cEBzcw==\r\n"), "{req}");
        assert_eq!(Proxy::http("10.0.0.1:8080").unwrap().address(), "10.0.0.1:8080");
        assert_eq!(
            Proxy::http("http://[::1]:3128").unwrap().connect_request("::1", 9).lines().next(),
            Some("CONNECT [::1]:9 HTTP/1.1")
        );
    }

    #[test]
    fn bad_proxy_urls_are_refused_without_their_credentials() {
        let err = Proxy::http("https://u:secret@proxy:1").unwrap_err().to_string();
        assert!(err.contains("https") && !err.contains("secret"), "{err}");
        let err = Proxy::http("http://u:secret@:99999").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn no_proxy_matches_hosts_domains_ports_and_star() {
        let list = parse_no_proxy("localhost, .corp.example ,10.1.2.3:8080,runware.ai");
        for host in ["localhost", "a.corp.example", "corp.example", "10.1.2.3", "ws-api.runware.ai", "RUNWARE.AI"] {
            assert!(matches_no_proxy(&list, host), "{host}");
        }
        for host in ["example", "notrunware.ai", "10.1.2.30", "127.0.0.1"] {
            assert!(!matches_no_proxy(&list, host), "{host}");
        }
        assert!(matches_no_proxy(&parse_no_proxy("*"), "anything"));
        let fixed = ProxyPolicy::Fixed(Proxy::http("p:1").unwrap().no_proxy("127.0.0.1"));
        assert_eq!(fixed.proxy_for("ws", "127.0.0.1").unwrap(), None);
        assert!(fixed.proxy_for("wss", "ws-api.runware.ai").unwrap().is_some());
        assert_eq!(ProxyPolicy::Disabled.proxy_for("wss", "x").unwrap(), None);
    }
}
