//! Setting the RAPI backend up: where the RAPI is ([`RapiConfig`], from maintd's
//! `[cluster]` settings), the HTTP Basic credentials, the URL check, and how the server's
//! certificate is trusted. Everything here fails at startup, with a [`RapiSetupError`].

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use awc::http::Uri;
use rustls::pki_types::CertificateDer;
use thiserror::Error;

use super::{DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT};
use crate::backend::tls::{client_config, pem_certificates, TlsError};

/// Why the backend could not be set up (a configuration problem, reported at startup).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RapiSetupError {
    /// The base URL is not an `https://host[:port]` URL.
    #[error("RAPI URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials file is missing, unreadable or malformed.
    #[error("RAPI credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate file is missing, unreadable or holds no certificate.
    #[error("RAPI certificate file {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither a pinned certificate nor a CA was given.
    #[error(
        "RAPI needs a pinned certificate (the cluster's rapi.pem) or a CA file to check the server"
    )]
    NoTrust,
}

/// The user and password for HTTP Basic authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// RAPI user name (a line of the cluster's `rapi/users` file with the `write` option).
    pub user: String,
    pub(super) password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from their parts.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Parse a credentials file: `user password` on one line. Blank lines and lines
    /// starting with `#` are skipped; exactly one other line, with exactly two fields,
    /// must be there.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let Some(line) = lines.next() else {
            return Err("empty; expected one line \"user password\"".into());
        };
        if lines.next().is_some() {
            return Err("more than one line; expected one line \"user password\"".into());
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [user, password] => Ok(Credentials::new(*user, *password)),
            [_] => Err("no password; expected one line \"user password\"".into()),
            _ => Err(format!(
                "{} fields; expected one line \"user password\"",
                fields.len()
            )),
        }
    }

    /// Read and parse a credentials file.
    pub fn load(path: &Path) -> Result<Self, RapiSetupError> {
        let error = |reason: String| RapiSetupError::Credentials {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        Credentials::parse(&text).map_err(error)
    }
}

/// Certificates from a PEM file (other sections, such as a private key, are ignored).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, RapiSetupError> {
    pem_certificates(path).map_err(|reason| RapiSetupError::Certificate {
        path: path.display().to_string(),
        reason,
    })
}

/// Where the RAPI is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RapiConfig {
    /// Base URL, `https://host[:port]` (e.g. `https://cluster.example.com:5080`).
    pub url: String,
    /// File holding `user password` on one line.
    pub credentials: PathBuf,
    /// PEM file with the certificate to pin (the cluster's `rapi.pem`; a key in it is ignored).
    pub pinned_certificate: Option<PathBuf>,
    /// PEM file with the CA certificates that may sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// Limit on one request, from connecting to the end of the answer.
    pub timeout: Duration,
    /// Answers larger than this are refused.
    pub max_response_bytes: usize,
}

impl RapiConfig {
    /// The settings of `[cluster]` (meaningful with `backend = "rapi"`).
    pub fn from_settings(cluster: &crate::config::ClusterSettings) -> Self {
        let file = |path: &str| (!path.is_empty()).then(|| PathBuf::from(path));
        RapiConfig {
            pinned_certificate: file(&cluster.rapi_certificate),
            ca: file(&cluster.rapi_ca),
            timeout: cluster.rapi_timeout,
            ..RapiConfig::new(&cluster.rapi_url, &cluster.rapi_credentials)
        }
    }

    /// Settings for `url` with the credentials in `credentials`, default limits and no
    /// certificate check yet (set `pinned_certificate` and/or `ca`).
    pub fn new(url: impl Into<String>, credentials: impl Into<PathBuf>) -> Self {
        RapiConfig {
            url: url.into(),
            credentials: credentials.into(),
            pinned_certificate: None,
            ca: None,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Check that `url` is `https://host[:port]` (an optional path prefix is kept) and return
/// it without a trailing slash.
pub fn validate_url(url: &str) -> Result<String, RapiSetupError> {
    let error = |reason: &str| RapiSetupError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|e| error(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            return Err(error(
                "plain http would send the password in clear; use https",
            ))
        }
        _ => return Err(error("must start with https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(error("no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(error("must not have a query or fragment"));
    }
    if url.contains('@') {
        return Err(error(
            "must not carry credentials; use the credentials file",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The rustls client configuration checking the server as `pinned` and `ca` say.
pub fn tls_config(
    pinned: Vec<CertificateDer<'static>>,
    ca: Option<Vec<CertificateDer<'static>>>,
) -> Result<rustls::ClientConfig, RapiSetupError> {
    client_config(pinned, ca, None).map_err(|e| trust_error(e, None, None))
}

/// A TLS setup error as a setup error naming the file at fault, when known.
fn trust_error(error: TlsError, pinned: Option<&Path>, ca: Option<&Path>) -> RapiSetupError {
    let file = |path: Option<&Path>, unknown: &str| {
        path.map_or_else(|| unknown.to_owned(), |p| p.display().to_string())
    };
    let reason = error.to_string();
    match error {
        TlsError::NoTrust => RapiSetupError::NoTrust,
        TlsError::Pin => RapiSetupError::Certificate {
            path: file(pinned, "(pinned)"),
            reason,
        },
        TlsError::Ca(_) => RapiSetupError::Certificate {
            path: file(ca, "(CA)"),
            reason,
        },
        TlsError::ClientKey(_) | TlsError::ServerPem(_) | TlsError::Protocol(_) => {
            RapiSetupError::Certificate {
                path: "(TLS)".into(),
                reason,
            }
        }
    }
}

impl RapiConfig {
    /// The TLS client configuration these settings ask for: reads the certificate files.
    pub(super) fn tls(&self) -> Result<rustls::ClientConfig, RapiSetupError> {
        let pinned = match &self.pinned_certificate {
            Some(path) => load_certificates(path)?,
            None => Vec::new(),
        };
        let ca = self.ca.as_deref().map(load_certificates).transpose()?;
        client_config(pinned, ca, None)
            .map_err(|e| trust_error(e, self.pinned_certificate.as_deref(), self.ca.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_are_parsed_strictly() {
        let ok = Credentials::parse("# maintd\n\nmaintd  maintd-secret\n").unwrap();
        assert_eq!(
            (ok.user.as_str(), ok.password.as_str()),
            ("maintd", "maintd-secret")
        );
        assert!(!format!("{ok:?}").contains("secret"));
        for bad in [
            "",
            "# only a comment\n",
            "maintd\n",
            "a b c\n",
            "a b\nc d\n",
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad:?}");
        }
        let missing = Credentials::load(Path::new("/nonexistent/maintd-rapi")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/maintd-rapi"));
    }

    #[test]
    fn trust_errors_name_the_file_at_fault() {
        let pinned = Path::new("rapi.pem");
        let ca = Path::new("ca.pem");
        let named = |error| match trust_error(error, Some(pinned), Some(ca)) {
            RapiSetupError::Certificate { path, .. } => path,
            other => other.to_string(),
        };
        assert_eq!(named(TlsError::Pin), "rapi.pem");
        assert_eq!(named(TlsError::Ca("x".into())), "ca.pem");
        assert_eq!(
            trust_error(TlsError::NoTrust, None, None),
            RapiSetupError::NoTrust
        );
        assert!(matches!(
            tls_config(vec![CertificateDer::from(vec![0x30, 0x00])], None),
            Err(RapiSetupError::Certificate { path, .. }) if path == "(pinned)"
        ));
    }

    #[test]
    fn urls_must_be_https_without_extras() {
        assert_eq!(
            validate_url("https://cluster.example.com:5080/").unwrap(),
            "https://cluster.example.com:5080"
        );
        assert!(validate_url("https://127.0.0.1:15080").is_ok());
        for bad in [
            "http://cluster:5080",
            "cluster:5080",
            "https://",
            "https://c:5080/?x=1",
            "https://u:p@c:5080",
            "",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?}");
        }
    }
}
