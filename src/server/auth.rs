//! The bearer token check, in front of every call.

use tonic::service::Interceptor;
use tonic::{Request, Status};

/// A `tonic` interceptor requiring `authorization: Bearer <token>` on every call when the server
/// has a token (the scheme in any case, as RFC 7235 says), and letting every call through
/// otherwise.
#[derive(Clone)]
pub struct BearerAuth {
    expected: Option<Vec<u8>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("BearerAuth")
            .field("required", &self.expected.is_some())
            .finish()
    }
}

impl BearerAuth {
    /// Requires `token` when it is given.
    pub fn new(token: Option<String>) -> Self {
        Self {
            expected: token.map(String::into_bytes),
        }
    }
}

/// Compares without stopping at the first difference, so that the time taken does not tell how
/// much of a guess was right (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let Some(given) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "this server requires an authorization: Bearer <token> header",
            ));
        };
        match bearer_token(given.as_bytes()) {
            Some(token) if constant_time_eq(token, expected) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated(
                "the authorization header must be Bearer <token>",
            )),
        }
    }
}

/// The token of an `authorization` value whose scheme is `Bearer`, in any case.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.first() != Some(&b' ') {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_values() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
    }

    #[test]
    fn the_scheme_is_matched_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc"] {
            assert_eq!(bearer_token(value.as_bytes()), Some(&b"abc"[..]), "{value}");
        }
        for value in ["Basic abc", "Bearerabc", "Bear", ""] {
            assert_eq!(bearer_token(value.as_bytes()), None, "{value}");
        }
    }
}
