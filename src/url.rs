//! The LiteLLM base URL: parsed once at config write, so requests cannot be built from an
//! invalid one.

use std::fmt;

use crate::error::{Error, Result};
use crate::redact;

/// Longest accepted URL, in bytes.
const MAX_URL_BYTES: usize = 2048;

/// URL scheme of the LiteLLM proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// A validated `http(s)://host[:port][/base/path]` URL without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    scheme: Scheme,
    authority: String,
    base_path: String,
}

impl BaseUrl {
    /// Parses and validates `text`. A trailing `/` is removed.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| {
            Error::invalid(format!(
                "url is invalid: {:?} {reason}; use http://host:port or https://host \
                 with an optional base path",
                redact::truncate(&mask_user_info(text), 200)
            ))
        };
        if text.len() > MAX_URL_BYTES {
            return Err(invalid(&format!("is longer than {MAX_URL_BYTES} bytes")));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters"));
        }

        let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(invalid("does not start with http:// or https://"));
        };
        if rest.contains(['?', '#']) {
            return Err(invalid("has a query or fragment"));
        }

        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_authority(authority).map_err(|reason| invalid(reason))?;
        let base_path = path.trim_end_matches('/');
        if base_path.contains("//") || base_path.split('/').any(|s| s == "." || s == "..") {
            return Err(invalid("has an empty, '.' or '..' path segment"));
        }

        Ok(Self {
            scheme,
            authority: authority.to_ascii_lowercase(),
            base_path: base_path.to_owned(),
        })
    }

    /// Scheme of the URL.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `host[:port]` of the URL.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Path and query for the API route `route` (which starts with `/`) under the base path.
    pub fn path_for(&self, route: &str) -> String {
        format!("{}{route}", self.base_path)
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority, self.base_path)
    }
}

/// Returns `text` with everything between the scheme and the last `@` replaced by `***`,
/// so that an error never repeats a password given as user information. Masking up to
/// the last `@` also covers passwords that contain `/`, `?` or `#`.
fn mask_user_info(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        return text.to_owned();
    };
    let start = text.find("://").map_or(0, |scheme_end| scheme_end + 3);
    if at < start {
        return text.to_owned();
    }
    format!("{}***{}", &text[..start], &text[at..])
}

fn validate_authority(authority: &str) -> std::result::Result<(), &'static str> {
    if authority.is_empty() {
        return Err("has no host");
    }
    if authority.contains('@') {
        return Err("contains user information");
    }
    let (host, port) = split_port(authority)?;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(number) if number > 0 => {}
            _ => return Err("has an invalid port"),
        }
    }
    let host_valid = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|ip| {
            !ip.is_empty()
                && ip
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    if host_valid {
        Ok(())
    } else {
        Err("has an invalid host")
    }
}

fn split_port(authority: &str) -> std::result::Result<(&str, Option<&str>), &'static str> {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) if end + 1 == authority.len() => Ok((authority, None)),
            Some(end) => match authority[end + 1..].strip_prefix(':') {
                Some(port) => Ok((&authority[..=end], Some(port))),
                None => Err("has an invalid host"),
            },
            None => Err("has an invalid host"),
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slash_is_removed() {
        let url = BaseUrl::parse("http://127.0.0.1:4000/").unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:4000");
        assert_eq!(url.path_for("/key/generate"), "/key/generate");
    }

    #[test]
    fn base_path_is_kept() {
        let url = BaseUrl::parse("https://Proxy.example:8443/litellm/").unwrap();
        assert_eq!(url.authority(), "proxy.example:8443");
        assert_eq!(url.path_for("/key/delete"), "/litellm/key/delete");
    }

    #[test]
    fn invalid_urls_are_rejected() {
        for text in [
            "",
            "127.0.0.1:4000",
            "ftp://host",
            "http://",
            "http://user:pw@host",
            "http://host:0",
            "http://host:99999",
            "http://host/a?b=1",
            "http://ho st",
            "http://host//x",
            "http://host/../x",
        ] {
            assert!(
                matches!(BaseUrl::parse(text), Err(Error::InvalidInput(_))),
                "{text:?} was accepted"
            );
        }
    }

    #[test]
    fn user_info_is_masked_in_errors() {
        for (text, shown) in [
            ("http://admin:pw@host", "\"http://***@host\""),
            ("http://admin:p/w@host", "\"http://***@host\""),
            ("admin:pw@host:4000", "\"***@host:4000\""),
        ] {
            let message = BaseUrl::parse(text).unwrap_err().to_string();
            assert!(message.contains(shown), "{text:?}: {message}");
            assert!(
                !message.contains("pw") && !message.contains("p/w"),
                "{message}"
            );
        }
    }
}
