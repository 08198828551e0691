//! Outbound HTTP allow-list entries (`doppel deploy --allow-outbound URL`): which servers a
//! service may call through `wasi:http/outgoing-handler`. Nothing is allowed by default.
//!
//! An entry is `SCHEME://HOST[:PORT]`: the scheme `http` or `https`, the port defaulting to the
//! scheme's. `HOST` is a name (`idp.example.de`), `*.` and a name for its sub-domains (not the
//! name itself), or an IP address. A name is checked again on the address actually connected
//! to: loopback, private, link-local (the cloud metadata address) and other non-public addresses
//! are refused unless the entry names that address itself.

use std::net::IpAddr;

/// The host part of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name (lower case, no trailing dot).
    Name(String),
    /// Any sub-domain of this name (`*.example.de` matches `a.example.de`, `a.b.example.de`).
    SubdomainsOf(String),
    /// Exactly this address.
    Address(IpAddr),
}

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRule {
    /// `http` or `https`.
    pub scheme: String,
    /// Which hosts.
    pub host: HostPattern,
    /// Which port.
    pub port: u16,
}

impl OutboundRule {
    /// Reads an entry; why not, in words.
    pub fn parse(text: &str) -> Result<OutboundRule, String> {
        let bad = |why: &str| {
            format!(
                "--allow-outbound {text:?}: {why} (expected SCHEME://HOST[:PORT], e.g. https://idp.example.de or https://*.example.de:8443)"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "only a scheme, a host and a port; no path, query or user",
            ));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("the port is not a number"))?;
        let port = port.unwrap_or(default_port);
        if port == 0 {
            return Err(bad("port 0"));
        }
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        let pattern = if let Some(name) = host.strip_prefix("*.") {
            check_name(name).map_err(|w| bad(&w))?;
            HostPattern::SubdomainsOf(name.to_string())
        } else if let Some(ip) = parse_ip(&host) {
            HostPattern::Address(ip)
        } else {
            check_name(&host).map_err(|w| bad(&w))?;
            HostPattern::Name(host)
        };
        Ok(OutboundRule {
            scheme,
            host: pattern,
            port,
        })
    }

    /// Whether a request to `scheme://host:port` is what this entry allows (the address it
    /// resolves to is checked separately).
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) || self.port != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        match &self.host {
            HostPattern::Name(name) => host == name,
            HostPattern::SubdomainsOf(name) => host
                .strip_suffix(name.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            HostPattern::Address(ip) => parse_ip(host) == Some(*ip),
        }
    }
}

/// `HOST` and `PORT` of `HOST[:PORT]`, with `[v6]` brackets; `None` when the port is not a number.
pub fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        _ => Some((text, None)),
    }
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a host name"))
    }
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local
/// (169.254.0.0/16 holds the cloud metadata service), shared (100.64.0.0/10), unspecified,
/// multicast, broadcast, documentation or reserved, in IPv4 or IPv6 (IPv4-mapped included).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_match_only_what_they_name() {
        let r = OutboundRule::parse("https://idp.example.de").unwrap();
        assert!(r.matches("https", "idp.example.de", 443));
        assert!(r.matches("https", "IDP.example.de.", 443));
        assert!(!r.matches("http", "idp.example.de", 443));
        assert!(!r.matches("https", "idp.example.de", 8443));
        assert!(!r.matches("https", "evil-idp.example.de", 443));
        let w = OutboundRule::parse("https://*.example.de:8443/").unwrap();
        assert!(w.matches("https", "a.b.example.de", 8443));
        assert!(!w.matches("https", "example.de", 8443));
        assert!(!w.matches("https", "aexample.de", 8443));
        let ip = OutboundRule::parse("http://[::1]:9000").unwrap();
        assert!(ip.matches("http", "[::1]", 9000));
        assert_eq!(OutboundRule::parse("http://10.0.0.5").unwrap().port, 80);
        for bad in [
            "idp.example.de",
            "ftp://x.de",
            "https://x.de/path",
            "https://user@x.de",
            "https://x.de:http",
            "https://*.",
            "https://a..b",
            "https://x.de:0",
        ] {
            assert!(OutboundRule::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn only_public_addresses_count_as_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.215.14", "2a00:1450:4001::200e", "8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
