//! What an answer's head may hold: the limits both HTTP clients share, reqwest's and
//! the tunnel's own hyper client, set as browsers take a head rather than as hyper's
//! defaults (a site that sets many cookies still works in a browser).

/// Header lines of an answer we accept (hyper's default is 100).
pub(super) const MAX_HEADER_LINES: usize = 512;

/// Largest HTTP/2 header list accepted: what Chrome takes for a whole response head.
pub(super) const MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;
