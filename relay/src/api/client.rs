//! Who is asking, as far as throttles are concerned: the client address, grouped the way one
//! subscriber's addresses are handed out.
//!
//! An IPv4 address counts by itself (a carrier-grade NAT puts many phones behind one, which is
//! why the per-address lockout spares patients without recent failures, `docs/API.md`). An
//! IPv6 subscriber gets at least a whole /64 and may pick any address inside it, so IPv6
//! addresses count by their /64 prefix; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
//! dual-stack socket reports) counts as its IPv4 address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

use crate::state::AppState;

/// The client's address: the TCP peer, or — behind a trusted TLS proxy — the address that proxy
/// appended last to `X-Forwarded-For` (earlier entries are client-controlled and ignored).
pub fn address(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if !state.settings().trust_forwarded_for {
        return peer.ip();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer.ip())
}

/// The unit a throttle counts: the IPv4 address itself, or the IPv6 /64 (as `prefix::/64`).
fn counted_unit(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX));
            format!("{prefix}/64")
        }
    }
}

/// The key identifying the client's address in throttles, without storing the address itself:
/// a keyed hash under the data key (`docs/PROTOCOL.md`, "Relay data at rest").
pub fn throttle_key(state: &AppState, address: IpAddr) -> String {
    let lookup = state
        .data_key()
        .lookup("client-address", counted_unit(address).as_bytes());
    format!("address:{}", hex::encode(&lookup[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> String {
        counted_unit(text.parse().unwrap())
    }

    #[test]
    fn ipv4_counts_by_address_and_ipv6_by_64() {
        assert_eq!(unit("198.51.100.7"), "198.51.100.7");
        assert_eq!(unit("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(unit("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(
            unit("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(unit("2001:db8:1:3::1"), "2001:db8:1:3::/64");
        assert_eq!(unit("::1"), "::/64");
    }
}
