//! `allowed_outbound_hosts` with Spin's grammar (`spin/crates/outbound-networking-config/src/allowed_hosts.rs`).
//!
//! An entry is `<scheme>://<host>[:<port>]`: the scheme is required (`*` = any); the host is `*`,
//! `*.domain` (subdomains only), a literal name, an IP CIDR, or `self`/`self.alt`; the port
//! defaults by scheme (http 80, https 443, redis 6379, postgres 5432, mysql 3306, mqtt 1883;
//! other schemes must give one) and may be `*`, a number or `a..b` (end excluded, a Rust range).
//! No path (one trailing `/` is tolerated), no `{a,b}` lists, no `insecure:allow-all`.

use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemePattern {
    Any,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Subdomains(String),
    Exact(String),
    Cidr(IpNet),
    /// `self` / `self.alt`: requests to the app itself. This host does not offer self-requests
    /// (Spin's relative-URL feature), so these entries parse but match nothing.
    SelfOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Exact(u16),
    Range(u16, u16),
}

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: SchemePattern,
    host: HostPattern,
    port: PortPattern,
}

/// A component's parsed allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "http" => 80,
        "https" => 443,
        "redis" => 6379,
        "postgres" => 5432,
        "mysql" => 3306,
        "mqtt" => 1883,
        _ => return None,
    })
}

impl AllowedHosts {
    /// Parses a list of already template-resolved entries. Entries that resolved to an empty
    /// string, `http://` or `https://` are skipped, as in Spin.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut parsed = Vec::new();
        for e in entries {
            if e.is_empty() || e == "http://" || e == "https://" {
                continue;
            }
            parsed.push(Self::parse_entry(e)?);
        }
        Ok(Self { entries: parsed })
    }

    /// Parses one entry.
    pub fn parse_entry(entry: &str) -> Result<AllowedHost, String> {
        if entry == "insecure:allow-all" {
            return Err("`insecure:allow-all` is not allowed; use `*://*:*`".into());
        }
        if entry.contains('{') || entry.contains('}') {
            return Err("lists such as `{a,b}` are not supported".into());
        }
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| "a scheme is required (for example `https://`)".to_string())?;
        if scheme.is_empty() {
            return Err("a scheme is required".into());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') && !looks_like_cidr(rest) {
            return Err("a path is not allowed".into());
        }
        let (host, port) = split_host_port(rest)?;
        let scheme_pattern = if scheme == "*" {
            SchemePattern::Any
        } else {
            if !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
            {
                return Err(format!("invalid scheme `{scheme}`"));
            }
            SchemePattern::Exact(scheme.to_ascii_lowercase())
        };
        let host_pattern = if host == "*" {
            HostPattern::Any
        } else if host == "self" || host == "self.alt" {
            HostPattern::SelfOrigin
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(format!("invalid wildcard host `{host}`"));
            }
            HostPattern::Subdomains(domain.to_ascii_lowercase())
        } else if host.contains('*') {
            return Err(format!(
                "wildcards are allowed only as a leading `*.` label: `{host}`"
            ));
        } else if let Ok(net) = host.parse::<IpNet>() {
            HostPattern::Cidr(net)
        } else if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            HostPattern::Cidr(IpNet::from(ip))
        } else if host.is_empty() {
            return Err("a host is required".into());
        } else {
            HostPattern::Exact(host.to_ascii_lowercase())
        };
        let port_pattern = match port {
            None => match scheme_pattern {
                SchemePattern::Exact(ref s) => PortPattern::Exact(
                    default_port(s)
                        .ok_or_else(|| format!("scheme `{s}` has no default port; give one"))?,
                ),
                SchemePattern::Any => return Err("a port is required with scheme `*`".into()),
            },
            Some("*") => PortPattern::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => {
                    let a: u16 = a.parse().map_err(|_| format!("invalid port range `{p}`"))?;
                    let b: u16 = b.parse().map_err(|_| format!("invalid port range `{p}`"))?;
                    if a >= b {
                        return Err(format!("empty port range `{p}` (the end is excluded)"));
                    }
                    PortPattern::Range(a, b)
                }
                None => PortPattern::Exact(p.parse().map_err(|_| format!("invalid port `{p}`"))?),
            },
        };
        Ok(AllowedHost {
            scheme: scheme_pattern,
            host: host_pattern,
            port: port_pattern,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.allows_url(scheme, host, Some(port))
    }

    /// Whether a URL that may omit its port is allowed. A missing port is the scheme's default;
    /// for a scheme without one (`rediss`, say) only entries with port `*` match, as in Spin.
    pub fn allows_url(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let port = port.or_else(|| default_port(&scheme.to_ascii_lowercase()));
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|e| {
            let scheme_ok = match &e.scheme {
                SchemePattern::Any => true,
                SchemePattern::Exact(s) => s.eq_ignore_ascii_case(scheme),
            };
            let host_ok = match &e.host {
                HostPattern::Any => true,
                HostPattern::Subdomains(d) => {
                    host.len() > d.len() + 1
                        && host.ends_with(d.as_str())
                        && host.as_bytes()[host.len() - d.len() - 1] == b'.'
                }
                HostPattern::Exact(h) => *h == host,
                HostPattern::Cidr(net) => ip.is_some_and(|ip| net.contains(&ip)),
                HostPattern::SelfOrigin => false,
            };
            let port_ok = match (&e.port, port) {
                (PortPattern::Any, _) => true,
                (PortPattern::Exact(p), Some(port)) => *p == port,
                (PortPattern::Range(a, b), Some(port)) => (*a..*b).contains(&port),
                (_, None) => false,
            };
            scheme_ok && host_ok && port_ok
        })
    }
}

fn looks_like_cidr(s: &str) -> bool {
    let host = split_host_port(s).map(|(h, _)| h).unwrap_or(s);
    host.parse::<IpNet>().is_ok()
}

fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(stripped) = rest.strip_prefix('[') {
        let end = stripped
            .find(']')
            .ok_or_else(|| "unclosed `[` in IPv6 host".to_string())?;
        let host = &rest[..end + 2];
        let after = &rest[end + 2..];
        return Ok((host, after.strip_prefix(':')));
    }
    // A CIDR keeps its `/len`; the port follows it after a `:`.
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h, Some(p))),
        Some(_) => Ok((rest, None)),
        None => Ok((rest, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid entries")
    }

    #[test]
    fn subdomain_wildcard_excludes_apex_and_uses_default_port() {
        let h = hosts(&["https://*.fly.dev"]);
        assert!(h.allows("https", "app.fly.dev", 443));
        assert!(!h.allows("https", "fly.dev", 443));
        assert!(!h.allows("https", "app.fly.dev", 8443));
        assert!(!h.allows("http", "app.fly.dev", 443));
        assert!(!h.allows("https", "evilfly.dev", 443));
    }

    #[test]
    fn exact_host_and_ranges() {
        let h = hosts(&["https://api.machines.dev", "http://127.0.0.1:8000..8002"]);
        assert!(h.allows("https", "api.machines.dev", 443));
        assert!(h.allows("http", "127.0.0.1", 8001));
        assert!(!h.allows("http", "127.0.0.1", 8002));
    }

    #[test]
    fn a_url_without_port_takes_the_scheme_default() {
        let h = hosts(&["redis://cache.internal", "rediss://tls.internal:6380"]);
        assert!(h.allows_url("redis", "cache.internal", None));
        assert!(h.allows_url("redis", "cache.internal", Some(6379)));
        assert!(!h.allows_url("redis", "cache.internal", Some(6380)));
        assert!(h.allows_url("rediss", "tls.internal", Some(6380)));
        // `rediss` has no default port: only a `*` port entry covers a URL that omits it.
        assert!(!h.allows_url("rediss", "tls.internal", None));
        assert!(hosts(&["rediss://tls.internal:*"]).allows_url("rediss", "tls.internal", None));
    }

    #[test]
    fn cidr_any_and_rejections() {
        let h = hosts(&["*://10.0.0.0/8:*"]);
        assert!(h.allows("http", "10.1.2.3", 1));
        assert!(!h.allows("http", "11.0.0.1", 1));
        assert!(hosts(&["*://*:*"]).allows("https", "x.y", 9));
        for bad in [
            "example.com",
            "https://example.com/path",
            "insecure:allow-all",
            "https://{a,b}.com",
            "tcp://x",
            "https://a.*.com",
            "*://x.com",
        ] {
            assert!(AllowedHosts::parse_entry(bad).is_err(), "{bad}");
        }
        assert!(AllowedHosts::parse_entry("https://example.com/").is_ok());
    }
}
