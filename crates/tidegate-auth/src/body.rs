//! Reading HTTP response bodies from services we do not control (a JWKS
//! endpoint, an external checker) without trusting them to be small.

/// Reads at most `limit` bytes of `response`'s body; the rest is dropped.
///
/// Why: a misbehaving IdP or checker must not make the gateway buffer an
/// unbounded body. Callers treat a truncated body as whatever it parses to
/// (for a JWKS that is an error; for a checker's reason, a shorter reason).
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
