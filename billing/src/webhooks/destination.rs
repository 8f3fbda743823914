//! Where webhooks may go: the address policy (no loopback, private, link-local, CGNAT,
//! metadata, multicast, documentation or other non-public address unless
//! `webhooks.allow_private_destinations`), checked when an endpoint is registered and
//! again on every connection of a delivery — the HTTP client resolves names through a
//! resolver that refuses such answers and connects only to the addresses it checked, so a
//! name re-pointed after registration (DNS rebinding) reaches nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

use crate::error::FieldError;
use crate::settings::WebhooksSettings;

/// Why an address is not a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonPublic {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), unique-local `fc00::/7`.
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT, `100.64/10`.
    SharedCgnat,
    /// Cloud instance metadata services (169.254.169.254, fd00:ec2::254, …).
    Metadata,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15`, `2001:2::/48`.
    Benchmarking,
    /// Everything else outside the public unicast space (`240/4`, `192.0.0/24`,
    /// deprecated and special-purpose IPv6 ranges, …).
    Reserved,
}

impl NonPublic {
    fn describe(self) -> &'static str {
        match self {
            NonPublic::Unspecified => "an unspecified address",
            NonPublic::Loopback => "a loopback address",
            NonPublic::Private => "a private address",
            NonPublic::LinkLocal => "a link-local address",
            NonPublic::SharedCgnat => "a shared (CGNAT) address",
            NonPublic::Metadata => "a cloud metadata address",
            NonPublic::Multicast => "a multicast address",
            NonPublic::Broadcast => "the broadcast address",
            NonPublic::Documentation => "a documentation address",
            NonPublic::Benchmarking => "a benchmarking address",
            NonPublic::Reserved => "a reserved address",
        }
    }
}

/// Instance metadata services that sit on otherwise unremarkable addresses (the usual
/// 169.254.169.254 is link-local anyway, but says more under its own name).
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, …
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(168, 63, 129, 16),   // Azure wire server (a public address)
];
const METADATA_V6: &[Ipv6Addr] = &[
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254), // AWS (Nitro, IPv6)
];

/// `None` for a public unicast address, otherwise what it is. IPv4 embedded in IPv6
/// (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged as the
/// IPv4 address it reaches.
pub fn classify(ip: IpAddr) -> Option<NonPublic> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<NonPublic> {
    if METADATA_V4.contains(&ip) {
        return Some(NonPublic::Metadata);
    }
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => NonPublic::Unspecified,
        (10, _, _) => NonPublic::Private,
        (100, _, _) if b & 0xc0 == 64 => NonPublic::SharedCgnat,
        (127, _, _) => NonPublic::Loopback,
        (169, 254, _) => NonPublic::LinkLocal,
        (172, _, _) if b & 0xf0 == 16 => NonPublic::Private,
        (192, 0, 0) => NonPublic::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => NonPublic::Documentation,
        (192, 88, 99) => NonPublic::Reserved, // the retired 6to4 relay anycast
        (192, 168, _) => NonPublic::Private,
        (198, _, _) if b & 0xfe == 18 => NonPublic::Benchmarking,
        (224..=239, _, _) => NonPublic::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => NonPublic::Broadcast,
        (240..=255, _, _) => NonPublic::Reserved,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<NonPublic> {
    if METADATA_V6.contains(&ip) {
        return Some(NonPublic::Metadata);
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_unspecified() {
        return Some(NonPublic::Unspecified);
    }
    if ip.is_loopback() {
        return Some(NonPublic::Loopback);
    }
    // NAT64 (well-known prefix) and 6to4 reach the IPv4 address inside.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    let class = match s[0] {
        0xfc00..=0xfdff => NonPublic::Private,
        0xfe80..=0xfebf => NonPublic::LinkLocal,
        0xff00..=0xffff => NonPublic::Multicast,
        0x2001 if s[1] == 0x0db8 => NonPublic::Documentation,
        0x3fff if s[1] < 0x1000 => NonPublic::Documentation,
        0x2001 if s[1] == 0x0002 && s[2] == 0 => NonPublic::Benchmarking,
        // Teredo (an obfuscated IPv4 inside), ORCHIDs and the other IETF assignments.
        0x2001 if s[1] < 0x0200 => NonPublic::Reserved,
        // Only 2000::/3 is global unicast: the rest (IPv4-compatible ::a.b.c.d, the
        // discard prefix, site-local fec0::/10, unassigned space) is not a destination.
        0x2000..=0x3fff => return None,
        _ => NonPublic::Reserved,
    };
    Some(class)
}

/// A destination the policy refused: the host as written and what it is (or resolves to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    host: String,
    class: NonPublic,
    /// The host is the address itself, not a name resolving to it.
    literal: bool,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refused {
            host,
            class,
            literal,
        } = self;
        let what = class.describe();
        if *literal {
            write!(f, "destination refused: {host} is {what}")
        } else {
            write!(f, "destination refused: {host} resolves to {what}")
        }
    }
}

// The resolver hands reqwest a boxed error; the attempt's outcome finds it in the chain.
impl std::error::Error for Refused {}

/// `localhost` and its subdomains are loopback by definition (RFC 6761), whatever a
/// resolver says.
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The first non-public address among `addrs`, as a refusal of `host`.
fn first_refused(host: &str, addrs: &[SocketAddr]) -> Option<Refused> {
    addrs.iter().find_map(|a| {
        classify(a.ip()).map(|class| Refused {
            host: host.to_owned(),
            class,
            literal: false,
        })
    })
}

/// The refusal a URL's host earns as written: an address literal that is not public.
/// `None` for names (and unparsable URLs): those are judged by what they resolve to.
pub(super) fn refused_literal(url: &str) -> Option<Refused> {
    let url = Url::parse(url).ok()?;
    let (host, class) = match url.host()? {
        Host::Ipv4(ip) => (ip.to_string(), classify_v4(ip)?),
        Host::Ipv6(ip) => (ip.to_string(), classify_v6(ip)?),
        Host::Domain(_) => return None,
    };
    Some(Refused {
        host,
        class,
        literal: true,
    })
}

/// How resolving a name for a webhook went.
enum Resolved {
    /// Every address is public: these may be connected to.
    Public(Vec<SocketAddr>),
    Refused(Refused),
    /// The name does not resolve (or not in time).
    Failed(std::io::Error),
}

/// Resolves `name` with the system resolver and judges every address: one non-public
/// answer refuses the whole name (a name that mixes public and private answers is not
/// a receiver's). A `localhost` name is refused whatever it resolves to.
async fn resolve(name: &str, port: u16) -> Resolved {
    let localhost = || Refused {
        host: name.to_owned(),
        class: NonPublic::Loopback,
        literal: false,
    };
    match tokio::net::lookup_host((name, port)).await {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if let Some(refused) = first_refused(name, &addrs) {
                Resolved::Refused(refused)
            } else if is_localhost(name) {
                Resolved::Refused(localhost())
            } else {
                Resolved::Public(addrs)
            }
        }
        Err(_) if is_localhost(name) => Resolved::Refused(localhost()),
        Err(e) => Resolved::Failed(e),
    }
}

/// Registration's check of an endpoint URL (already known to be an absolute http(s) URL):
/// nothing unless private destinations are refused; then an address literal is judged
/// as written, and a name by every address it resolves to now. A name that does not
/// resolve (yet) is accepted: each delivery judges it again.
pub(super) async fn check(settings: &WebhooksSettings, url: &str, errors: &mut Vec<FieldError>) {
    if settings.allow_private_destinations {
        return;
    }
    let refused = match refused_literal(url) {
        Some(refused) => Some(refused),
        None => check_name(settings, url).await,
    };
    if let Some(refused) = refused {
        errors.push(FieldError::new(
            "url",
            format!("{refused} (webhooks.allow_private_destinations is off)"),
        ));
    }
}

async fn check_name(settings: &WebhooksSettings, url: &str) -> Option<Refused> {
    let url = Url::parse(url).ok()?;
    let Some(Host::Domain(name)) = url.host() else {
        return None;
    };
    let port = url.port_or_known_default().unwrap_or(0);
    let resolved = tokio::time::timeout(settings.connect_timeout_ms, resolve(name, port)).await;
    match resolved {
        Ok(Resolved::Refused(refused)) => Some(refused),
        Ok(Resolved::Public(_)) => None,
        Ok(Resolved::Failed(e)) => {
            tracing::info!(host = name, error = %e, "webhook host does not resolve (yet); accepted");
            None
        }
        Err(_) => {
            tracing::info!(host = name, "webhook host resolution timed out; accepted");
            None
        }
    }
}

/// Resolves like the system resolver, then refuses the whole name if any answer is not
/// public: reqwest connects only to addresses this returned, so what was checked is what
/// is reached — a name re-pointed after registration (DNS rebinding) is judged by its
/// answer at the moment of connecting. (reqwest never asks a resolver about address
/// literals; those are refused before the request, see [`refused_literal`].)
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match resolve(&host, 0).await {
                Resolved::Public(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Resolved::Refused(refused) => Err(Box::new(refused) as _),
                Resolved::Failed(e) => Err(Box::new(e) as _),
            }
        })
    }
}

/// The client deliveries are made with: its own pool and timeouts, no redirects (a
/// receiver answers for itself; a 3xx is a failed attempt), and — unless private
/// destinations are allowed — the guarded resolver and no proxy (a proxy would resolve
/// the name itself, past the check).
pub fn http_client(settings: &WebhooksSettings) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(settings.timeout_ms)
        .connect_timeout(settings.connect_timeout_ms)
        .redirect(reqwest::redirect::Policy::none());
    let builder = if settings.allow_private_destinations {
        builder
    } else {
        builder.no_proxy().dns_resolver(Arc::new(GuardedResolver))
    };
    builder.build()
}

/// The policy's refusal inside a request error, if that is why it failed.
pub(super) fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use NonPublic::*;

    #[test]
    fn addresses_are_classified() {
        let cases: &[(&str, Option<NonPublic>)] = &[
            // public
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.215.14", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.0.1.1", None),
            ("192.169.0.1", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2a00:1450:4001:800::200e", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
            // IPv4
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("169.254.170.2", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("168.63.129.16", Some(Metadata)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.10", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.200", Some(Documentation)),
            ("192.88.99.1", Some(Reserved)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            // IPv6
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fc00::1", Some(Private)),
            ("fd12:3456:789a::1", Some(Private)),
            ("fd00:ec2::254", Some(Metadata)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Reserved)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001:2::1", Some(Benchmarking)),
            ("2001::1", Some(Reserved)),
            ("2001:10::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("::127.0.0.1", Some(Reserved)),
            ("::8.8.8.8", Some(Reserved)),
            ("64:ff9b:1::1", Some(Reserved)),
            // IPv4 inside IPv6 is judged as the IPv4 address
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:100.64.0.1", Some(SharedCgnat)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(Metadata)),
            ("2002:c0a8:101::1", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
        ];
        for (addr, want) in cases {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(classify(ip), *want, "{addr}");
        }
    }

    #[test]
    fn address_literals_are_judged_as_written() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "http://127.0.0.1:9000/x",
                Some("destination refused: 127.0.0.1 is a loopback address"),
            ),
            (
                "http://10.0.0.1/",
                Some("destination refused: 10.0.0.1 is a private address"),
            ),
            (
                "http://169.254.169.254/latest/meta-data",
                Some("destination refused: 169.254.169.254 is a cloud metadata address"),
            ),
            (
                "http://[::1]/",
                Some("destination refused: ::1 is a loopback address"),
            ),
            (
                "http://[::ffff:127.0.0.1]/",
                Some("destination refused: ::ffff:127.0.0.1 is a loopback address"),
            ),
            (
                "http://[fd00:ec2::254]/",
                Some("destination refused: fd00:ec2::254 is a cloud metadata address"),
            ),
            // the URL parser's other IPv4 spellings are the same address
            (
                "http://2130706433/",
                Some("destination refused: 127.0.0.1 is a loopback address"),
            ),
            (
                "http://0x7f.1/",
                Some("destination refused: 127.0.0.1 is a loopback address"),
            ),
            (
                "http://0/",
                Some("destination refused: 0.0.0.0 is an unspecified address"),
            ),
            // names are judged by what they resolve to
            ("https://localhost:8443/hook", None),
            ("https://8.8.8.8/hook", None),
            ("https://[2606:4700::1]/", None),
            ("https://partner.example/hooks", None),
            ("https://localhost.example/hooks", None),
            ("not a url", None),
        ];
        for (url, want) in cases {
            let got = refused_literal(url).map(|r| r.to_string());
            assert_eq!(got.as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn a_name_is_refused_if_any_of_its_addresses_is() {
        let public: SocketAddr = "93.184.215.14:443".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert_eq!(first_refused("x.example", &[public]), None);
        assert_eq!(
            first_refused("x.example", &[public, loopback])
                .unwrap()
                .to_string(),
            "destination refused: x.example resolves to a loopback address"
        );
    }

    #[tokio::test]
    async fn registration_checks_only_when_private_destinations_are_refused() {
        let mut settings = WebhooksSettings::default();
        assert!(!settings.allow_private_destinations, "off by default");
        let mut errors = Vec::new();
        check(&settings, "http://localhost:9000/hook", &mut errors).await;
        check(&settings, "http://[::1]/", &mut errors).await;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| e.field == "url"), "{errors:?}");
        settings.allow_private_destinations = true;
        let mut errors = Vec::new();
        check(&settings, "http://localhost:9000/hook", &mut errors).await;
        check(&settings, "http://169.254.169.254/", &mut errors).await;
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let refused = |r: Resolved| match r {
            Resolved::Refused(refused) => Some(refused.to_string()),
            Resolved::Public(_) | Resolved::Failed(_) => None,
        };
        // /etc/hosts answers these without any DNS
        assert_eq!(
            refused(resolve("localhost", 80).await).as_deref(),
            Some("destination refused: localhost resolves to a loopback address")
        );
        // a localhost name is loopback even where no resolver knows it
        assert_eq!(
            refused(resolve("pillivery-test.localhost", 80).await).as_deref(),
            Some("destination refused: pillivery-test.localhost resolves to a loopback address")
        );
        assert!(matches!(
            resolve("no-such-host.invalid", 80).await,
            Resolved::Failed(_)
        ));
    }

    #[tokio::test]
    async fn the_guarded_resolver_refuses_loopback_names() {
        use reqwest::dns::Resolve;
        let err = match GuardedResolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        assert_eq!(
            refusal_in(err.as_ref()).map(ToString::to_string).as_deref(),
            Some("destination refused: localhost resolves to a loopback address")
        );
    }
}
