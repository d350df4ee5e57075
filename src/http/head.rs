//! What an answer's head may hold: the limits both HTTP clients share, reqwest's and
//! the tunnel's own hyper client, set as browsers take a head rather than as hyper's
//! defaults (a site that sets many cookies still works in a browser).

/// Header lines of an answer we accept (hyper's default is 100). hyper makes room for
/// this many each time it tries to parse a head, so the clients that ask every request
/// keep it moderate.
pub(super) const MAX_HEADER_LINES: usize = 512;

/// Header lines of an answer the mending client accepts, when the first client could
/// not read the head (a head of more lines than [`MAX_HEADER_LINES`] among them): a
/// head of Chrome's 256 KB in lines of 32 bytes. Browsers limit a head by its size, not
/// its lines (hunt Q: 600 lines, 24 KB, were `down/protocol` "message head is too
/// large").
pub(super) const MAX_HEADER_LINES_MENDED: usize = 8192;

/// Largest HTTP/2 header list accepted: what Chrome takes for a whole response head.
pub(super) const MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;
