//! Which addresses picket may probe. Applied to every resolved address and every
//! redirect hop, so that a job (or a site's redirect) cannot make the worker reach
//! its own machine, its network, or a cloud metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, or `None` when it may be probed.
///
/// `allow_private` lets loopback, private, link-local, CGNAT and metadata addresses
/// through (for test farms and intranets); unspecified, multicast and broadcast
/// addresses are never probe targets.
pub(crate) fn refusal(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    let class = match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    };
    match class {
        Class::Public => None,
        Class::Never(why) => Some(why),
        Class::Private(_) if allow_private => None,
        Class::Private(why) => Some(why),
    }
}

/// What an operator can do about a refused address: `targets.allow_private` lets
/// private ranges through (for intranets and test farms); nothing allows the others.
pub(crate) fn how_to_allow(ip: IpAddr) -> &'static str {
    if refusal(ip, true).is_none() {
        " (targets.allow_private = true allows it)"
    } else {
        ""
    }
}

enum Class {
    Public,
    Private(&'static str),
    Never(&'static str),
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let o = ip.octets();
    if ip.is_unspecified() || o[0] == 0 {
        return Class::Never("an unspecified (0.0.0.0/8) address");
    }
    if ip.is_broadcast() {
        return Class::Never("the broadcast address");
    }
    if ip.is_multicast() {
        return Class::Never("a multicast address");
    }
    if ip.is_loopback() {
        return Class::Private("a loopback address");
    }
    // AWS/GCP/OpenStack, Alibaba, and Azure's WireServer (host agent and DNS).
    if o == [169, 254, 169, 254] || o == [100, 100, 100, 200] || o == [168, 63, 129, 16] {
        return Class::Private("a cloud metadata address");
    }
    if ip.is_link_local() {
        return Class::Private("a link-local address");
    }
    if ip.is_private() {
        return Class::Private("a private address");
    }
    if o[0] == 100 && (o[1] & 0xc0) == 64 {
        return Class::Private("a carrier-grade NAT (100.64.0.0/10) address");
    }
    if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        return Class::Private("an IETF protocol assignment (192.0.0.0/24) address");
    }
    if o[0] == 198 && (o[1] & 0xfe) == 18 {
        return Class::Private("a benchmarking (198.18.0.0/15) address");
    }
    if o[0] >= 240 {
        return Class::Private("a reserved (240.0.0.0/4) address");
    }
    Class::Public
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if ip.is_unspecified() {
        return Class::Never("the unspecified IPv6 address");
    }
    if ip.is_multicast() {
        return Class::Never("an IPv6 multicast address");
    }
    if ip.is_loopback() {
        return Class::Private("the IPv6 loopback address");
    }
    // Addresses that carry an IPv4 address are judged by it: otherwise
    // ::ffff:127.0.0.1 or 64:ff9b::a9fe:a9fe would slip past.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let last_v4 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[0..6] == [0, 0, 0, 0, 0xffff, 0] {
        // SIIT IPv4-translated, ::ffff:0:a.b.c.d (RFC 6145)
        return classify_v4(last_v4());
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        // Local-use NAT64 (RFC 8215) may embed IPv4 at any prefix length, and is never
        // a public site's address.
        return Class::Private("a local-use NAT64 (64:ff9b:1::/48) address");
    }
    if s[0..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated), ::a.b.c.d
        return classify_v4(last_v4());
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64 well-known prefix 64:ff9b::/96
        return classify_v4(last_v4());
    }
    if s[0] == 0x2002 {
        // 6to4 embeds the IPv4 address in the next 32 bits.
        return classify_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Class::Private("a unique-local (fc00::/7) IPv6 address");
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Class::Private("a link-local IPv6 address");
    }
    if (s[0] & 0xffc0) == 0xfec0 {
        return Class::Private("a site-local IPv6 address");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Class::Private("a documentation (2001:db8::/32) IPv6 address");
    }
    if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        return Class::Private("a discard-only (100::/64) IPv6 address");
    }
    Class::Public
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refusal(s.parse().expect("ip"), false).is_some()
    }

    #[test]
    fn private_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "2001:db8::1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn wireserver_siit_and_local_use_nat64_are_refused() {
        for ip in [
            "168.63.129.16",
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:a00:1::",
            "64:ff9b:1:808:8:800::",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        assert!(
            !refused("::ffff:0:808:808"),
            "SIIT of a public address is public"
        );
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!refused(ip), "{ip} should pass");
        }
    }

    #[test]
    fn allow_private_lets_private_through_but_never_multicast() {
        assert_eq!(refusal("127.0.0.2".parse().expect("ip"), true), None);
        assert_eq!(refusal("10.0.0.1".parse().expect("ip"), true), None);
        assert!(refusal("0.0.0.0".parse().expect("ip"), true).is_some());
        assert!(refusal("224.0.0.1".parse().expect("ip"), true).is_some());
        assert!(refusal("::".parse().expect("ip"), true).is_some());
    }

    #[test]
    fn the_setting_is_named_only_where_it_helps() {
        assert!(how_to_allow("127.0.0.1".parse().expect("ip")).contains("targets.allow_private"));
        assert!(how_to_allow("169.254.169.254".parse().expect("ip")).contains("allow_private"));
        assert_eq!(how_to_allow("224.0.0.1".parse().expect("ip")), "");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// An IPv4 address hidden in IPv6 (mapped, compatible, NAT64, 6to4) is judged
        /// exactly like the IPv4 address itself.
        #[test]
        fn embedded_ipv4_is_judged_as_ipv4(a in any::<u32>(), allow in any::<bool>()) {
            let v4 = Ipv4Addr::from(a);
            let o = v4.octets();
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            let nat64 = IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0,
                u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]])));
            let six_to_four = IpAddr::V6(Ipv6Addr::new(0x2002,
                u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]]), 0, 0, 0, 0, 1));
            let expected = refusal(IpAddr::V4(v4), allow).is_some();
            prop_assert_eq!(refusal(mapped, allow).is_some(), expected);
            prop_assert_eq!(refusal(nat64, allow).is_some(), expected);
            prop_assert_eq!(refusal(six_to_four, allow).is_some(), expected);
        }
    }
}
