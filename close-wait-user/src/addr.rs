//! Socket addresses as a person reads them: `127.0.0.1:8080`, `[::1]:8080`;
//! IPv4-mapped IPv6 addresses print as IPv4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use close_wait_common::AF_INET;

/// Builds an address from the raw bytes the tracepoints carry (IPv4 in the
/// first four bytes when `family` is AF_INET).
pub fn from_raw(family: u16, bytes: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    };
    SocketAddr::new(unmap(ip), port)
}

/// Turns an IPv4-mapped IPv6 address (::ffff:a.b.c.d) into plain IPv4.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Same address, mapped addresses normalised: used as a comparison key.
pub fn normalize(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap(a.ip()), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use close_wait_common::AF_INET6;

    #[test]
    fn v4_from_raw() {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(from_raw(AF_INET, &b, 80).to_string(), "127.0.0.1:80");
    }

    #[test]
    fn v6_loopback_in_brackets() {
        let b = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(from_raw(AF_INET6, &b, 8080).to_string(), "[::1]:8080");
    }

    #[test]
    fn v4_mapped_prints_as_v4() {
        let b = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        assert_eq!(from_raw(AF_INET6, &b, 443).to_string(), "10.1.2.3:443");
    }
}
