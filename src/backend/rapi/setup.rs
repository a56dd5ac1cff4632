//! Setting the RAPI backend up: where the RAPI is ([`RapiConfig`], from maintd's
//! `[cluster]` settings), the HTTP Basic credentials, the URL check, and how the server's
//! certificate is trusted. Everything here fails at startup, with a [`RapiSetupError`].

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use awc::http::Uri;
use rustls::{client::WebPkiServerVerifier, pki_types::CertificateDer, RootCertStore};
use thiserror::Error;

use super::{DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT};
use crate::backend::tls::{pem_certificates, Pin, PinnedVerifier};

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
            timeout: crate::config::seconds(cluster.rapi_timeout),
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
    if pinned.is_empty() && ca.is_none() {
        return Err(RapiSetupError::NoTrust);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = match ca {
        Some(certificates) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| RapiSetupError::Certificate {
                        path: "(CA)".into(),
                        reason: format!("unusable CA certificate: {e}"),
                    })?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| RapiSetupError::Certificate {
                        path: "(CA)".into(),
                        reason: e.to_string(),
                    })?;
            Some(verifier)
        }
        None => None,
    };
    let pins = pinned
        .into_iter()
        .map(|certificate| {
            Pin::new(certificate).ok_or_else(|| RapiSetupError::Certificate {
                path: "(pinned)".into(),
                reason: "not an X.509 certificate with a public key".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let verifier = PinnedVerifier::new(pins, ca, provider.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RapiSetupError::Certificate {
            path: "(TLS)".into(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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
