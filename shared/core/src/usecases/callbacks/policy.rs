//! Which callback URLs the service calls (docs/security.md): `https` only, no credentials in the URL, and
//! a host whose every resolved address is public. A name that resolves to one public and one
//! private address is refused: the client could not say which one a connection would use.
//!
//! The check runs when a job is created (a 400 naming `callbackURL`) and again before every
//! delivery attempt, whose connection then goes to an address this check accepted, so a name that
//! re-resolves to an internal address later (DNS rebinding) is never reached.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::Url;

/// Longest accepted callback URL.
pub const MAX_URL_LENGTH: usize = 2048;
/// How long resolving a callback host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a callback URL is refused. The messages complete "callbackURL …" for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    #[error("must be an absolute URL")]
    Malformed,
    #[error("must be at most {MAX_URL_LENGTH} characters")]
    TooLong,
    #[error("must use https")]
    NotHttps,
    #[error("must not contain a user name or password")]
    Credentials,
    #[error("must not contain a fragment")]
    Fragment,
    #[error("must name a host")]
    NoHost,
    #[error("must not name a local host")]
    LocalName,
    #[error("host {0} does not resolve")]
    Unresolvable(String),
    #[error("host resolves to {0}, which is not a public address")]
    ForbiddenAddress(IpAddr),
}

/// A callback URL that passed the policy, with the addresses a connection may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTarget {
    pub url: Url,
    /// The host as a DNS name, when it is not an IP literal (connections are pinned to `addrs`).
    pub domain: Option<String>,
    /// Every address the host resolved to; all passed the policy. Never empty.
    pub addrs: Vec<SocketAddr>,
}

/// The callback URL policy. The only relaxation, plain `http` to loopback addresses, exists for
/// tests and the local runner and is switched on by code, never by request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallbackPolicy {
    allow_insecure_loopback: bool,
}

impl CallbackPolicy {
    /// The production policy.
    pub fn strict() -> Self {
        CallbackPolicy { allow_insecure_loopback: false }
    }

    /// Also accepts `http` and loopback addresses (`127.0.0.0/8`, `::1`): for a test receiver on
    /// this machine. Names such as `localhost` stay refused; use the address.
    pub fn allow_insecure_loopback_for_tests() -> Self {
        CallbackPolicy { allow_insecure_loopback: true }
    }

    /// Checks the URL's form only (no DNS).
    pub fn parse(&self, url: &str) -> Result<Url, CallbackUrlError> {
        if url.len() > MAX_URL_LENGTH {
            return Err(CallbackUrlError::TooLong);
        }
        let parsed = Url::parse(url).map_err(|_| CallbackUrlError::Malformed)?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_insecure_loopback => {}
            _ => return Err(CallbackUrlError::NotHttps),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(CallbackUrlError::Credentials);
        }
        if parsed.fragment().is_some() {
            return Err(CallbackUrlError::Fragment);
        }
        match parsed.host() {
            None => return Err(CallbackUrlError::NoHost),
            Some(url::Host::Domain(name)) if is_local_name(name) => return Err(CallbackUrlError::LocalName),
            Some(_) => {}
        }
        Ok(parsed)
    }

    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || (self.allow_insecure_loopback && ip.to_canonical().is_loopback())
    }

    /// Checks the URL and every address its host resolves to.
    pub async fn check(&self, url: &str) -> Result<CheckedTarget, CallbackUrlError> {
        let parsed = self.parse(url)?;
        let port = parsed.port_or_known_default().ok_or(CallbackUrlError::Malformed)?;
        let (domain, addrs) = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => (None, vec![SocketAddr::new(IpAddr::V4(ip), port)]),
            Some(url::Host::Ipv6(ip)) => (None, vec![SocketAddr::new(IpAddr::V6(ip), port)]),
            Some(url::Host::Domain(name)) => {
                let name = name.to_owned();
                let unresolvable = || CallbackUrlError::Unresolvable(name.clone());
                let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name.as_str(), port)))
                    .await
                    .map_err(|_| unresolvable())?
                    .map_err(|_| unresolvable())?;
                let mut addrs: Vec<SocketAddr> = resolved.collect();
                addrs.sort();
                addrs.dedup();
                (Some(name), addrs)
            }
            None => return Err(CallbackUrlError::NoHost),
        };
        self.check_addresses(parsed, domain, addrs)
    }

    /// The policy over given resolution results (the part of [`CallbackPolicy::check`] after DNS).
    pub fn check_addresses(
        &self,
        url: Url,
        domain: Option<String>,
        addrs: Vec<SocketAddr>,
    ) -> Result<CheckedTarget, CallbackUrlError> {
        if addrs.is_empty() {
            return Err(CallbackUrlError::Unresolvable(domain.unwrap_or_default()));
        }
        if let Some(bad) = addrs.iter().find(|a| !self.allows(a.ip())) {
            return Err(CallbackUrlError::ForbiddenAddress(bad.ip()));
        }
        Ok(CheckedTarget { url, domain, addrs })
    }
}

/// `localhost` and its subdomains (RFC 6761), with or without the trailing dot.
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether an address is globally reachable unicast: not loopback, private, link-local,
/// unique-local, shared (CGNAT), unspecified, multicast, broadcast, reserved, documentation or
/// benchmarking space, and not an IPv6 form of such an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// IPv4 ranges that are never a callback target (IANA special-purpose registry).
const FORBIDDEN_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),       // "this network", includes the unspecified address
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local (cloud metadata endpoints live here)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, includes the limited broadcast address
];

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !FORBIDDEN_V4.iter().any(|(net, prefix)| in_v4(ip, *net, *prefix))
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // IPv4-mapped (::ffff:a.b.c.d): the IPv4 address is what a connection reaches.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // 6to4 (2002::/16) carries an IPv4 address in bits 16..48.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        let s = ip.segments();
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return is_public_v4(v4);
    }
    // Only global unicast (2000::/3) is a candidate at all: this excludes the unspecified and
    // loopback addresses, IPv4-compatible addresses (::/96), NAT64 (64:ff9b::/96), discard-only
    // (100::/64), unique-local (fc00::/7), link-local (fe80::/10), site-local and multicast.
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return false;
    }
    const FORBIDDEN_GLOBAL: &[([u16; 8], u32)] = &[
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),      // IETF protocol assignments, Teredo
        ([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32), // documentation
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),      // documentation (RFC 9637)
    ];
    !FORBIDDEN_GLOBAL.iter().any(|(net, prefix)| in_v6(ip, *net, *prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_special_ipv4_range_is_refused_at_both_ends_and_its_neighbours_are_not() {
        let refused = [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "192.168.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ];
        for a in refused {
            assert!(!is_public(ip(a)), "{a} must be refused");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ];
        for a in public {
            assert!(is_public(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn ipv6_special_ranges_and_ipv4_forms_are_refused() {
        let refused = [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::ffff:192.168.1.1",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::a00:1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ];
        for a in refused {
            assert!(!is_public(ip(a)), "{a} must be refused");
        }
        for a in ["2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8", "2002:808:808::1"] {
            assert!(is_public(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn the_url_must_be_https_without_credentials_and_not_local() {
        let p = CallbackPolicy::strict();
        assert!(p.parse("https://bank.example/hooks/segments?x=1").is_ok());
        for (url, error) in [
            ("http://bank.example/hook", CallbackUrlError::NotHttps),
            ("ftp://bank.example/hook", CallbackUrlError::NotHttps),
            ("https://user:pw@bank.example/hook", CallbackUrlError::Credentials),
            ("https://user@bank.example/hook", CallbackUrlError::Credentials),
            ("https://bank.example/hook#frag", CallbackUrlError::Fragment),
            ("https://localhost/hook", CallbackUrlError::LocalName),
            ("https://LOCALHOST./hook", CallbackUrlError::LocalName),
            ("https://api.localhost/hook", CallbackUrlError::LocalName),
            ("not a url", CallbackUrlError::Malformed),
            ("/relative", CallbackUrlError::Malformed),
        ] {
            assert_eq!(p.parse(url), Err(error), "{url}");
        }
        let long = format!("https://bank.example/{}", "a".repeat(MAX_URL_LENGTH));
        assert_eq!(p.parse(&long), Err(CallbackUrlError::TooLong));
    }

    #[tokio::test]
    async fn literal_addresses_are_checked_without_dns() {
        let p = CallbackPolicy::strict();
        for url in [
            "https://127.0.0.1/hook",
            "https://10.0.0.1/hook",
            "https://[::1]/hook",
            "https://[::ffff:192.168.0.1]/hook",
            "https://[fe80::1]/hook",
            "https://169.254.169.254/latest/meta-data",
            // Unusual spellings of loopback addresses are normalized by the URL parser.
            "https://2130706433/hook",
            "https://0x7f.1/hook",
            "https://017700000001/hook",
        ] {
            assert!(matches!(p.check(url).await, Err(CallbackUrlError::ForbiddenAddress(_))), "{url}");
        }
        let ok = p.check("https://8.8.8.8:8443/hook").await.unwrap();
        assert_eq!(ok.addrs, vec!["8.8.8.8:8443".parse().unwrap()]);
        assert_eq!(ok.domain, None);
    }

    #[tokio::test]
    async fn localhost_resolving_names_are_refused() {
        // `localhost` is refused by name; a name resolving to loopback is refused by address.
        let p = CallbackPolicy::strict();
        assert_eq!(p.check("https://localhost:8443/").await, Err(CallbackUrlError::LocalName));
    }

    #[test]
    fn a_mixed_dns_answer_is_refused_when_any_address_is_not_public() {
        let p = CallbackPolicy::strict();
        let url = Url::parse("https://hooks.bank.example/x").unwrap();
        let public: SocketAddr = "93.184.216.34:443".parse().unwrap();
        let public6: SocketAddr = "[2606:2800:220:1::1]:443".parse().unwrap();
        let ok = p.check_addresses(url.clone(), Some("hooks.bank.example".into()), vec![public, public6]).unwrap();
        assert_eq!(ok.addrs.len(), 2);
        for private in ["10.0.0.5:443", "[fd00::5]:443", "127.0.0.1:443", "[::ffff:172.16.0.1]:443"] {
            let private: SocketAddr = private.parse().unwrap();
            assert_eq!(
                p.check_addresses(url.clone(), Some("hooks.bank.example".into()), vec![public, private, public6]),
                Err(CallbackUrlError::ForbiddenAddress(private.ip())),
                "{private}"
            );
        }
        assert!(matches!(
            p.check_addresses(url, Some("hooks.bank.example".into()), vec![]),
            Err(CallbackUrlError::Unresolvable(_))
        ));
    }

    proptest::proptest! {
        /// An IPv4 address and its IPv4-mapped and 6to4 IPv6 forms are judged alike.
        #[test]
        fn ipv6_forms_of_an_ipv4_address_are_judged_like_it(bits in proptest::prelude::any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let [a, b, c, d] = v4.octets();
            let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1);
            proptest::prop_assert_eq!(is_public(IpAddr::V6(v4.to_ipv6_mapped())), is_public(IpAddr::V4(v4)));
            proptest::prop_assert_eq!(is_public(IpAddr::V6(six_to_four)), is_public(IpAddr::V4(v4)));
        }

        /// Nothing in a private, loopback, link-local or shared range is ever public.
        #[test]
        fn no_address_of_an_internal_range_is_public(host in proptest::prelude::any::<u32>()) {
            for (net, prefix) in [([10, 0, 0, 0], 8), ([172, 16, 0, 0], 12), ([192, 168, 0, 0], 16),
                                  ([127, 0, 0, 0], 8), ([169, 254, 0, 0], 16), ([100, 64, 0, 0], 10)] {
                let mask = u32::MAX << (32 - prefix);
                let ip = Ipv4Addr::from((u32::from(Ipv4Addr::from(net)) & mask) | (host & !mask));
                proptest::prop_assert!(!is_public(IpAddr::V4(ip)), "{}", ip);
            }
        }
    }

    #[tokio::test]
    async fn the_test_policy_allows_http_to_loopback_addresses_only() {
        let p = CallbackPolicy::allow_insecure_loopback_for_tests();
        assert!(p.check("http://127.0.0.1:9/hook").await.is_ok());
        assert!(p.check("http://[::1]:9/hook").await.is_ok());
        assert!(matches!(p.check("http://10.0.0.1/hook").await, Err(CallbackUrlError::ForbiddenAddress(_))));
        assert!(matches!(p.check("http://192.168.1.1/hook").await, Err(CallbackUrlError::ForbiddenAddress(_))));
        assert_eq!(p.check("http://localhost:9/hook").await, Err(CallbackUrlError::LocalName));
        assert_eq!(CallbackPolicy::strict().check("http://127.0.0.1:9/hook").await, Err(CallbackUrlError::NotHttps));
        assert_eq!(CallbackPolicy::default(), CallbackPolicy::strict());
    }
}
