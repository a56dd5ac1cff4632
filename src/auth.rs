//! Who may use maintd's API: Ganeti's RAPI users file and its rules, so that operators
//! keep one list of users for Ganeti's RAPI and for maintd.
//!
//! The file (`/var/lib/ganeti/rapi/users`) has one user per line, `NAME PASSWORD
//! [OPTION[,OPTION...]]`; `#` starts a comment. A password is plain text, `{cleartext}`
//! followed by plain text, or `{HA1}` followed by the hex MD5 of
//! `NAME:Ganeti Remote API:PASSWORD` (the prefixes in any case). The options that matter
//! are `read` and `write`. The rules follow ganeti-rapi's (`lib/server/rapi.py`,
//! `lib/http/auth.py`): requests that need nothing are served anonymously unless
//! authentication is required, credentials sent anyway are checked, and a known user
//! without the option a request needs is refused (403, not 401).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use base64::Engine as _;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The realm of Ganeti's RAPI: part of every `{HA1}` password in the users file.
pub const REALM: &str = "Ganeti Remote API";

/// An option of a user in the users file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// May read what needs authentication.
    Read,
    /// May change things (cancel, pause, resume).
    Write,
}

/// A password as the users file keeps it.
#[derive(Clone, PartialEq, Eq)]
enum Password {
    /// Compared as given.
    Cleartext(String),
    /// The hex MD5 of `NAME:REALM:PASSWORD`, lower case.
    Ha1(String),
}

impl std::fmt::Debug for Password {
    // Never in a log line, not even hashed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// One user of the users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUser {
    /// The user name.
    pub name: String,
    password: Password,
    /// `read` and `write`, as listed (other options are ignored, as Ganeti does).
    pub access: Vec<Access>,
}

impl ApiUser {
    /// Whether `password` is this user's.
    fn password_matches(&self, password: &str) -> bool {
        match &self.password {
            Password::Cleartext(expected) => {
                bool::from(expected.as_bytes().ct_eq(password.as_bytes()))
            }
            Password::Ha1(expected) => {
                let digest = Md5::digest(format!("{}:{REALM}:{password}", self.name));
                bool::from(hex::encode(digest).as_bytes().ct_eq(expected.as_bytes()))
            }
        }
    }

    /// Whether the user has `access`; `write` implies `read`, as in Ganeti.
    pub fn may(&self, access: Access) -> bool {
        self.access.contains(&access) || self.access.contains(&Access::Write)
    }
}

/// Why the users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// It cannot be read.
    #[error("cannot read the users file {path}: {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

/// The users of the users file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: BTreeMap<String, ApiUser>,
}

impl Users {
    /// Parse the file's text. Lines that are not `NAME PASSWORD [OPTIONS]` are skipped,
    /// as ganeti-rapi does; each gives a warning naming its line number (never its text,
    /// which may hold a password).
    pub fn parse(text: &str) -> (Users, Vec<String>) {
        let mut users = BTreeMap::new();
        let mut warnings = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(name), Some(password)) = (parts.next(), parts.next()) else {
                warnings.push(format!("line {}: no password; skipped", index + 1));
                continue;
            };
            let options: Vec<&str> = parts.flat_map(|p| p.split(',')).collect();
            let access = options
                .iter()
                .filter_map(|option| match option.to_ascii_lowercase().as_str() {
                    "read" => Some(Access::Read),
                    "write" => Some(Access::Write),
                    _ => None,
                })
                .collect();
            let scheme = split_scheme(password);
            let password = match scheme.as_ref().map(|(s, rest)| (s.as_str(), *rest)) {
                Some(("cleartext", rest)) => Password::Cleartext(rest.to_owned()),
                Some(("ha1", rest)) => Password::Ha1(rest.to_ascii_lowercase()),
                Some((other, _)) => {
                    warnings.push(format!(
                        "line {}: unknown password scheme {{{other}}}; skipped",
                        index + 1
                    ));
                    continue;
                }
                None => Password::Cleartext(password.to_owned()),
            };
            if users.contains_key(name) {
                warnings.push(format!(
                    "line {}: user {name} listed again; the later line counts",
                    index + 1
                ));
            }
            users.insert(
                name.to_owned(),
                ApiUser {
                    name: name.to_owned(),
                    password,
                    access,
                },
            );
        }
        (Users { users }, warnings)
    }

    /// Read and parse the file at `path`.
    pub fn load(path: &Path) -> Result<(Users, Vec<String>), UsersError> {
        let text = std::fs::read_to_string(path).map_err(|error| UsersError::Unreadable {
            path: path.display().to_string(),
            error,
        })?;
        Ok(Users::parse(&text))
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user these credentials name, if the password is right.
    pub fn check(&self, credentials: &Credentials) -> Option<&ApiUser> {
        self.users
            .get(&credentials.user)
            .filter(|user| user.password_matches(&credentials.password))
    }
}

/// `{scheme}rest` as (lower-case scheme, rest).
fn split_scheme(password: &str) -> Option<(String, &str)> {
    let rest = password.strip_prefix('{')?;
    let (scheme, rest) = rest.split_once('}')?;
    Some((scheme.to_ascii_lowercase(), rest))
}

/// A user name and password from a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why an `Authorization` header is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Not `Basic …` (Ganeti's RAPI does not do Digest either).
    #[error("only HTTP Basic authentication is supported")]
    NotBasic,
    /// Not base64 of `user:password` in ASCII.
    #[error("malformed Basic credentials")]
    Malformed,
}

impl Credentials {
    /// The credentials of an `Authorization: Basic …` header value.
    pub fn from_basic_header(value: &str) -> Result<Credentials, CredentialsError> {
        let (scheme, encoded) = value
            .trim()
            .split_once(' ')
            .ok_or(CredentialsError::NotBasic)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(CredentialsError::NotBasic);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| CredentialsError::Malformed)?;
        // Ganeti decodes the credentials as ASCII.
        let text = String::from_utf8(decoded).map_err(|_| CredentialsError::Malformed)?;
        if !text.is_ascii() {
            return Err(CredentialsError::Malformed);
        }
        let (user, password) = text.split_once(':').ok_or(CredentialsError::Malformed)?;
        Ok(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The `Authorization` header value for these credentials.
    pub fn basic_header(&self) -> String {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        format!("Basic {encoded}")
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: reads, served anonymously unless authentication is required.
    Nothing,
    /// The `write` option: cancel, pause, resume.
    Write,
}

/// The answer to a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Served without a user.
    Anonymous,
    /// Served for this user.
    User(String),
    /// 401: no credentials where they are needed, or wrong ones.
    Unauthenticated,
    /// 403: this user lacks the option the request needs.
    Forbidden(String),
}

/// Decide on a request that `needs` something, with `credentials` (if the client sent
/// any), under ganeti-rapi's rules.
pub fn authorize(
    users: &Users,
    credentials: Option<&Credentials>,
    needs: Need,
    require_authentication: bool,
) -> Decision {
    let Some(credentials) = credentials else {
        return if needs == Need::Nothing && !require_authentication {
            Decision::Anonymous
        } else {
            Decision::Unauthenticated
        };
    };
    match users.check(credentials) {
        None => Decision::Unauthenticated,
        Some(user) if needs == Need::Write && !user.may(Access::Write) => {
            Decision::Forbidden(user.name.clone())
        }
        Some(user) => Decision::User(user.name.clone()),
    }
}

/// Brakes on password guessing: a client with `max_failures` failed logins within a
/// `window` is refused without a check (429) until the window ends. Plain Rust with the
/// time passed in; bounded to `max_peers` clients (the oldest window goes first).
#[derive(Debug, Clone)]
pub struct LoginGuard {
    max_failures: u32,
    window: Duration,
    max_peers: usize,
    peers: HashMap<IpAddr, FailedLogins>,
}

/// One client's failed logins in its current window.
#[derive(Debug, Clone, Copy)]
struct FailedLogins {
    since: Instant,
    count: u32,
}

impl Default for LoginGuard {
    /// Ten failures a minute per client, 4096 clients tracked.
    fn default() -> Self {
        LoginGuard::new(10, Duration::from_secs(60), 4096)
    }
}

impl LoginGuard {
    /// At most `max_failures` failed logins per client and `window`.
    pub fn new(max_failures: u32, window: Duration, max_peers: usize) -> Self {
        LoginGuard {
            max_failures: max_failures.max(1),
            window,
            max_peers: max_peers.max(1),
            peers: HashMap::new(),
        }
    }

    /// Whether `peer` must wait before its credentials are checked again; the time left.
    pub fn blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let failed = self.peers.get(&peer)?;
        let ends = failed.since + self.window;
        (failed.count >= self.max_failures && now < ends).then(|| ends - now)
    }

    /// Count a failed login of `peer`.
    pub fn failed(&mut self, peer: IpAddr, now: Instant) {
        let window = self.window;
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.max_peers {
            self.peers.retain(|_, f| now < f.since + window);
            if self.peers.len() >= self.max_peers {
                let oldest = self
                    .peers
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(p, _)| *p);
                if let Some(oldest) = oldest {
                    self.peers.remove(&oldest);
                }
            }
        }
        let failed = self.peers.entry(peer).or_insert(FailedLogins {
            since: now,
            count: 0,
        });
        if now >= failed.since + window {
            *failed = FailedLogins {
                since: now,
                count: 0,
            };
        }
        failed.count = failed.count.saturating_add(1);
    }

    /// A successful login of `peer` clears its failures.
    pub fn succeeded(&mut self, peer: IpAddr) {
        self.peers.remove(&peer);
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# maintd's operators
alice {HA1}b8e3e1b8c8bd3c3a7e9c9d2c6d4c7e0f write
bob {cleartext}hunter2 read  # a comment
carol plain-secret read,write
dave {CLEARTEXT}{braces} other-option
broken
eve {sha256}abc write
";

    fn users() -> Users {
        let text = FILE.replace(
            "b8e3e1b8c8bd3c3a7e9c9d2c6d4c7e0f",
            &hex::encode(Md5::digest(format!("alice:{REALM}:s3cret"))).to_ascii_uppercase(),
        );
        let (users, warnings) = Users::parse(&text);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("line 6:"), "{warnings:?}");
        assert!(warnings[1].contains("{sha256}"), "{warnings:?}");
        assert!(
            warnings.iter().all(|w| !w.contains("abc")),
            "no secret in a warning"
        );
        users
    }

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn every_password_form_of_the_users_file_is_understood() {
        let users = users();
        assert_eq!(users.len(), 4);
        assert!(
            users.check(&creds("alice", "s3cret")).is_some(),
            "{{HA1}}, any case"
        );
        assert!(users.check(&creds("alice", "s3cret ")).is_none());
        assert!(
            users.check(&creds("bob", "hunter2")).is_some(),
            "{{cleartext}}"
        );
        assert!(
            users.check(&creds("carol", "plain-secret")).is_some(),
            "plain"
        );
        assert!(
            users.check(&creds("dave", "{braces}")).is_some(),
            "the rest after the prefix"
        );
        assert!(users.check(&creds("mallory", "hunter2")).is_none());
        assert!(users.check(&creds("bob", "")).is_none());
    }

    #[test]
    fn reads_are_open_writes_need_the_write_option() {
        let users = users();
        let decide = |c: Option<Credentials>, needs, required| {
            authorize(&users, c.as_ref(), needs, required)
        };
        assert_eq!(decide(None, Need::Nothing, false), Decision::Anonymous);
        assert_eq!(decide(None, Need::Nothing, true), Decision::Unauthenticated);
        assert_eq!(decide(None, Need::Write, false), Decision::Unauthenticated);
        // Credentials sent with a read are checked all the same.
        assert_eq!(
            decide(Some(creds("bob", "wrong")), Need::Nothing, false),
            Decision::Unauthenticated
        );
        assert_eq!(
            decide(Some(creds("bob", "hunter2")), Need::Nothing, true),
            Decision::User("bob".into())
        );
        assert_eq!(
            decide(Some(creds("bob", "hunter2")), Need::Write, false),
            Decision::Forbidden("bob".into())
        );
        assert_eq!(
            decide(Some(creds("dave", "{braces}")), Need::Write, false),
            Decision::Forbidden("dave".into())
        );
        for (user, password) in [("alice", "s3cret"), ("carol", "plain-secret")] {
            assert_eq!(
                decide(Some(creds(user, password)), Need::Write, false),
                Decision::User(user.into())
            );
        }
    }

    #[test]
    fn basic_headers_round_trip_and_bad_ones_are_refused() {
        let c = creds("alice", "s3:cret");
        assert_eq!(Credentials::from_basic_header(&c.basic_header()), Ok(c));
        assert_eq!(
            Credentials::from_basic_header("Basic bWFpbnRkOnMzY3JldA=="),
            Ok(creds("maintd", "s3cret"))
        );
        assert_eq!(
            Credentials::from_basic_header("Digest username=x"),
            Err(CredentialsError::NotBasic)
        );
        for bad in ["Basic !!!", "Basic bm9jb2xvbg==", "Basic w6k6w6k=", "Basic"] {
            assert!(Credentials::from_basic_header(bad).is_err(), "{bad}");
        }
        assert!(!format!("{:?}", creds("alice", "s3cret")).contains("s3cret"));
    }

    #[test]
    fn a_guessing_client_waits_out_its_window_and_others_are_not_held() {
        let t0 = Instant::now();
        let mut guard = LoginGuard::new(3, Duration::from_secs(60), 2);
        let (guesser, other, third): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        for i in 0..3 {
            assert_eq!(
                guard.blocked(guesser, t0),
                None,
                "failure {i} still checked"
            );
            guard.failed(guesser, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            guard.blocked(guesser, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(guard.blocked(other, t0), None);
        assert_eq!(guard.blocked(guesser, t0 + Duration::from_secs(60)), None);
        // A success clears the count.
        let later = t0 + Duration::from_secs(5);
        guard.failed(other, later);
        guard.failed(other, later);
        guard.succeeded(other);
        guard.failed(other, later);
        guard.failed(other, later);
        assert_eq!(
            guard.blocked(other, later),
            None,
            "two failures since the success"
        );
        // Bounded: a third client pushes out the oldest window.
        guard.failed(third, t0 + Duration::from_secs(30));
        assert_eq!(guard.tracked(), 2);
        assert_eq!(guard.blocked(guesser, t0 + Duration::from_secs(30)), None);
    }
}
