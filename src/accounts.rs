//! Accounts: who may log in, with which password. Passwords are hashed with argon2id (a fresh
//! salt each) and checked in constant time; an unknown username costs the same hash as a known
//! one, so timing does not reveal which names exist. Hashing runs off the async workers.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::auth::ApiKeyId;
use crate::auth::seal::Sealer;
use crate::store::{
    ApiKey, LockoutRule, LoginAttempt, NewUser, SecurityEvent, Store, StoreError, User,
    username_key,
};

pub const MIN_USERNAME: usize = 3;
pub const MAX_USERNAME: usize = 64;
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

/// The highest bcrypt cost an import accepts: each login with such a hash costs a core for a
/// second or so, and more would let one row tie up the node.
const MAX_BCRYPT_COST: u32 = 14;

/// Hashes computed at once: as many as there are cores, so that a flood of logins queues
/// instead of taking every core (and 19 MiB of memory per hash) from the relay.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        tokio::sync::Semaphore::new(cores)
    })
}

/// The roles an account may have.
pub const ROLES: [&str; 2] = ["user", "admin"];

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "username must be {MIN_USERNAME}-{MAX_USERNAME} characters of letters, digits and . _ - @"
    )]
    BadUsername,
    #[error("password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")]
    BadPassword,
    #[error("role must be user or admin")]
    BadRole,
    /// Unknown user, wrong password or disabled account: one answer for all three.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed logins: the account refuses logins until then (Unix seconds).
    #[error("too many failed logins; this account is locked for now")]
    Locked(i64),
    /// This failed login was one too many: the account is locked until then.
    #[error("too many failed logins; this account is locked for now")]
    LockedOut(i64),
    /// Too many failed logins from this address: it may not log in until then.
    #[error("too many failed logins from this address; try again later")]
    AddressLocked(i64),
    /// This failed login was one too many for its address: locked out until then.
    #[error("too many failed logins from this address; try again later")]
    AddressLockedOut(i64),
    #[error("no user {0}")]
    NoSuchUser(String),
    #[error("no API key with id or name {0}")]
    NoSuchKey(String),
    #[error("an API key name must be 1-64 characters without control characters")]
    BadKeyName,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed")]
    Hashing,
}

/// Checks a username's length and characters.
pub fn validate_username(username: &str) -> Result<(), AccountError> {
    let length = username.chars().count();
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if (MIN_USERNAME..=MAX_USERNAME).contains(&length) && username.chars().all(allowed) {
        Ok(())
    } else {
        Err(AccountError::BadUsername)
    }
}

/// Checks a password's length.
pub fn validate_password(password: &str) -> Result<(), AccountError> {
    let length = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        Ok(())
    } else {
        Err(AccountError::BadPassword)
    }
}

/// An argon2id hash (PHC string) of `password` with a fresh salt.
pub async fn hash_password(password: &str) -> Result<String, AccountError> {
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(|_| AccountError::Hashing)?;
    let password = password.to_owned();
    let hashed = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
    });
    hashed
        .await
        .map_err(|_| AccountError::Hashing)?
        .map_err(|_| AccountError::Hashing)
}

/// Whether `password` matches `hash`: an argon2 PHC string, or a bcrypt hash imported from a
/// predecessor (`$2a$`, `$2b$`, `$2y$`); `false` for anything else.
pub async fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(_permit) = hashing_permits().acquire().await else {
        return false;
    };
    let (password, hash) = (password.to_owned(), hash.to_owned());
    let checked = tokio::task::spawn_blocking(move || {
        if is_bcrypt(&hash) {
            return bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false);
        }
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    });
    checked.await.unwrap_or(false)
}

/// Whether `hash` is a bcrypt hash (kept from an import until the first login re-hashes it).
pub fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// A hash of nothing anyone knows, checked for unknown usernames so that they cost the same.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"switchboard-unknown-user")
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

/// Creates an account after checking its name, password and role.
pub async fn add_user(
    store: &Store,
    username: &str,
    password: &str,
    email: Option<&str>,
    role: &str,
    now: i64,
) -> Result<User, AccountError> {
    validate_username(username)?;
    validate_password(password)?;
    if !ROLES.contains(&role) {
        return Err(AccountError::BadRole);
    }
    let password_hash = hash_password(password).await?;
    let new = NewUser {
        username,
        email,
        password_hash: &password_hash,
        role,
    };
    Ok(store.create_user(&new, now).await?)
}

/// Replaces a user's password.
pub async fn set_password(
    store: &Store,
    username: &str,
    password: &str,
) -> Result<(), AccountError> {
    validate_password(password)?;
    let user = find(store, username).await?;
    let hash = hash_password(password).await?;
    store.set_password(&user.id, &hash).await?;
    Ok(())
}

/// The account called `username` (in any case).
pub async fn find(store: &Store, username: &str) -> Result<User, AccountError> {
    store
        .user_by_name(username)
        .await?
        .ok_or_else(|| AccountError::NoSuchUser(username.to_owned()))
}

/// When failed logins lock a name, and the address they come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Attempts on one name within `seconds` that lock it; 0 = never.
    pub threshold: usize,
    /// The window failures count in, and how long a lock lasts, in seconds.
    pub seconds: i64,
    /// The address the attempt comes from, and the failures from it within `seconds` that
    /// lock it out of every name (0 = never).
    pub address: Option<(std::net::IpAddr, usize)>,
}

impl Lockout {
    pub const OFF: Lockout = Lockout {
        threshold: 0,
        seconds: 0,
        address: None,
    };

    /// The failure count key of the address (its /64 for IPv6): `ip:ADDR`. Names are counted
    /// only when they could be usernames, which never contain `:`, so a login as `ip:…` cannot
    /// touch an address's count.
    fn address_key(&self) -> Option<(String, usize)> {
        let (ip, threshold) = self.address.filter(|(_, t)| *t > 0)?;
        Some((
            format!("ip:{}", crate::client_ip::budget_key(ip)),
            threshold,
        ))
    }
}

/// The active account `username` whose password is `password`. Unknown users, wrong passwords
/// and disabled accounts all give [`AccountError::InvalidCredentials`], after the same work.
///
/// With a lockout, every attempt on a name (known or not, so the two are not told apart) is
/// counted before its password is checked; the `lockout.threshold`-th within
/// `lockout.seconds` locks the name for `lockout.seconds` ([`AccountError::LockedOut`]), and a
/// locked name refuses every login until then ([`AccountError::Locked`]). A success clears the
/// count.
pub async fn authenticate(
    store: &Store,
    username: &str,
    password: &str,
    now: i64,
    lockout: Lockout,
) -> Result<User, AccountError> {
    let user = store.user_by_name(username).await?;
    let address = lockout.address_key();
    if let Some((key, _)) = &address
        && let Some((_, Some(until))) = store.login_failures(key).await?
        && until > now
    {
        return Err(AccountError::AddressLocked(until));
    }
    // A name that cannot be a username is never counted: it has no account to protect, and
    // its count could collide with an address's.
    let attempt = if lockout.threshold > 0 && validate_username(username).is_ok() {
        let rule = LockoutRule {
            threshold: i64::try_from(lockout.threshold).unwrap_or(i64::MAX),
            window_seconds: lockout.seconds,
            lock_seconds: lockout.seconds,
        };
        match store.reserve_login(username, now, rule).await? {
            LoginAttempt::Locked(until) => return Err(AccountError::Locked(until)),
            LoginAttempt::Counted { locked_until } => locked_until,
        }
    } else {
        None
    };
    // The dummy hash is computed once, off the async workers.
    let dummy = tokio::task::spawn_blocking(dummy_hash)
        .await
        .map_err(|_| AccountError::Hashing)?;
    let hash = user.as_ref().map_or(dummy, |u| u.password_hash.as_str());
    let matches = verify_password(password, hash).await;
    match user {
        Some(mut user) if matches && user.active => {
            if lockout.threshold > 0 {
                store.clear_login_failures(username).await?;
            }
            store.record_login(&user.id, now).await?;
            if is_bcrypt(&user.password_hash) {
                // An imported hash: replaced by argon2id now that the password is known.
                user.password_hash = hash_password(password).await?;
                store.set_password(&user.id, &user.password_hash).await?;
            }
            user.last_login_at = Some(now);
            Ok(user)
        }
        _ => {
            if let Some((key, threshold)) = &address {
                let rule = LockoutRule {
                    threshold: i64::try_from(*threshold).unwrap_or(i64::MAX),
                    window_seconds: lockout.seconds,
                    lock_seconds: lockout.seconds,
                };
                // Counted after the check: `auth_rate` bounds what one address tries at once.
                if let LoginAttempt::Counted {
                    locked_until: Some(until),
                } = store.reserve_login(key, now, rule).await?
                {
                    return Err(AccountError::AddressLockedOut(until));
                }
            }
            match attempt {
                Some(until) => Err(AccountError::LockedOut(until)),
                None => Err(AccountError::InvalidCredentials),
            }
        }
    }
}

/// API key names: 1-64 printable characters.
pub fn validate_key_name(name: &str) -> Result<(), AccountError> {
    let length = name.chars().count();
    if (1..=64).contains(&length) && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(AccountError::BadKeyName)
    }
}

/// Creates API key `name`: a new id and a random signing secret, kept sealed. Returns the key
/// and its secret, which is shown once and never again.
pub async fn create_api_key(
    store: &Store,
    sealer: &Sealer,
    name: &str,
    now: i64,
) -> Result<(ApiKey, String), AccountError> {
    validate_key_name(name)?;
    let id = ApiKeyId::generate();
    let (secret, _) = new_secret();
    let key = ApiKey {
        id: id.to_string(),
        name: name.to_owned(),
        secret_sealed: sealer.seal(secret.as_bytes(), id.as_str()),
        created_at: now,
        revoked_at: None,
    };
    store.add_api_key(&key).await?;
    Ok((key, secret))
}

/// The API key with id or name `key`: the live one, or else the latest revoked one.
pub async fn find_api_key(store: &Store, key: &str) -> Result<ApiKey, AccountError> {
    let keys = store.api_keys().await?;
    let matching = keys.into_iter().filter(|k| k.id == key || k.name == key);
    // Oldest first: the last revoked one wins, and a live one over any revoked one.
    matching
        .max_by_key(|k| (k.revoked_at.is_none(), k.created_at))
        .ok_or_else(|| AccountError::NoSuchKey(key.to_owned()))
}

/// Records a security event; a failure to record is logged, never fatal.
pub async fn record_event(store: &Store, event: SecurityEvent) {
    let (kind, user, ip) = (&event.kind, event.user_id.as_deref(), event.ip.as_deref());
    // Never the username: a password typed into the name field would land in the log.
    if SUCCESSES.contains(&kind.as_str()) {
        tracing::info!(event = %kind, user_id = user, ip, "security event");
    } else {
        tracing::warn!(event = %kind, user_id = user, ip, "security event");
    }
    if let Err(e) = store.record_event(&event).await {
        tracing::warn!(error = %e, kind = %event.kind, "security event not recorded");
    }
}

/// Security events that are not refusals or alarms (logged at info, the others at warn).
const SUCCESSES: &[&str] = &["login_succeeded", "logged_out", "registered"];

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub added: usize,
    /// Rows whose username exists already: left as they are.
    pub skipped: Vec<String>,
}

/// Imports the users CSV of a predecessor: a header row naming `username`, a bcrypt
/// `hashed_password` (or `password_hash`), and optionally `email`, `is_active`/`active` and
/// `role`/`is_admin`. The hashes are kept and verified at login, where the first success
/// re-hashes with argon2id. Existing usernames are skipped; a malformed row stops the import
/// before anything is written, naming its line.
pub async fn import_users(
    store: &Store,
    csv_text: &str,
    now: i64,
) -> Result<Imported, ImportError> {
    let rows = parse_users_csv(csv_text)?;
    let mut imported = Imported::default();
    for row in rows {
        if store.user_by_name(&row.username).await?.is_some() {
            imported.skipped.push(row.username);
            continue;
        }
        let new = NewUser {
            username: &row.username,
            email: row.email.as_deref(),
            password_hash: &row.hash,
            role: row.role,
        };
        let user = store.create_user(&new, now).await?;
        if !row.active {
            store.set_active(&user.id, false).await?;
        }
        imported.added += 1;
    }
    Ok(imported)
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {reason}")]
    Row { line: u64, reason: String },
    #[error("the header must name `username` and `hashed_password` (or `password_hash`)")]
    Header,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Row {
    username: String,
    hash: String,
    email: Option<String>,
    active: bool,
    role: &'static str,
}

fn parse_users_csv(text: &str) -> Result<Vec<Row>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|_| ImportError::Header)?.clone();
    let column = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.contains(&h.to_ascii_lowercase().as_str()))
    };
    let username = column(&["username"]).ok_or(ImportError::Header)?;
    let hash = column(&["hashed_password", "password_hash"]).ok_or(ImportError::Header)?;
    let (email, active) = (column(&["email"]), column(&["is_active", "active"]));
    let (role, admin) = (column(&["role"]), column(&["is_admin"]));
    let mut rows: Vec<Row> = Vec::new();
    for record in reader.records() {
        let line = |r: &csv::StringRecord| r.position().map_or(0, |p| p.line());
        let record = record.map_err(|e| ImportError::Row {
            line: e.position().map_or(0, |p| p.line()),
            reason: "not a CSV row".into(),
        })?;
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("");
        let bad = |reason: &str| ImportError::Row {
            line: line(&record),
            reason: reason.to_owned(),
        };
        let name = field(Some(username)).to_owned();
        validate_username(&name).map_err(|e| bad(&e.to_string()))?;
        let hashed = field(Some(hash)).to_owned();
        if !is_bcrypt(&hashed) {
            return Err(bad("the password hash is not a bcrypt hash"));
        }
        let cost: u32 = hashed
            .get(4..6)
            .and_then(|c| c.parse().ok())
            .unwrap_or(u32::MAX);
        if cost > MAX_BCRYPT_COST {
            return Err(bad("the bcrypt cost is above 14"));
        }
        if rows
            .iter()
            .any(|r| username_key(&r.username) == username_key(&name))
        {
            return Err(bad("the username appears twice in the file (in any case)"));
        }
        let truthy = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes");
        let is_admin = field(role) == "admin" || truthy(field(admin));
        rows.push(Row {
            username: name,
            hash: hashed,
            email: Some(field(email).to_owned()).filter(|e| !e.is_empty()),
            active: active.is_none_or(|_| truthy(field(active))),
            role: if is_admin { "admin" } else { "user" },
        });
    }
    Ok(rows)
}

/// On an empty database, creates the demo accounts `alice` and `bob` with random passwords and
/// returns them (name, password); on any other, nothing. For development nodes only.
pub async fn create_demo_users(
    store: &Store,
    now: i64,
) -> Result<Vec<(String, String)>, AccountError> {
    if !store.users().await?.is_empty() {
        return Ok(Vec::new());
    }
    let mut created = Vec::new();
    for name in ["alice", "bob"] {
        let (secret, _) = new_secret();
        let password: String = secret.chars().take(16).collect();
        add_user(store, name, &password, None, "user", now).await?;
        created.push((name.to_owned(), password));
    }
    Ok(created)
}

/// A new random secret for a bearer credential (32 bytes, base64url) and the SHA-256 hex the
/// store keeps in its place.
pub fn new_secret() -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = secret_hash(&secret);
    (secret, hash)
}

/// The hash under which the store keeps a bearer secret.
pub fn secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `bytes` from the OS random number generator.
fn getrandom(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("the OS random number generator is available");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PoolSize;

    async fn store() -> Store {
        let store = Store::connect("sqlite::memory:", PoolSize { min: 0, max: 1 })
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    #[test]
    fn usernames_and_passwords_are_checked() {
        for ok in ["bob", "alice.smith", "ünïcode", "a@b.c"] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", "has space", "semi;colon", &"x".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
    }

    #[tokio::test]
    async fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert_ne!(
            hash,
            hash_password("correct horse").await.unwrap(),
            "fresh salt"
        );
        assert!(verify_password("correct horse", &hash).await);
        assert!(!verify_password("wrong horse", &hash).await);
        assert!(!verify_password("x", "not a hash").await);
    }

    #[tokio::test]
    async fn authentication_refuses_unknown_wrong_and_disabled_alike() {
        let store = store().await;
        let user = add_user(&store, "Alice", "password-1", None, "user", 10)
            .await
            .unwrap();
        let ok = authenticate(&store, "alice", "password-1", 20, Lockout::OFF)
            .await
            .unwrap();
        assert_eq!(
            (ok.id.as_str(), ok.last_login_at),
            (user.id.as_str(), Some(20))
        );
        for (name, password) in [("alice", "password-2"), ("nobody", "password-1")] {
            let e = authenticate(&store, name, password, 30, Lockout::OFF)
                .await
                .unwrap_err();
            assert!(matches!(e, AccountError::InvalidCredentials), "{e}");
        }
        store.set_active(&user.id, false).await.unwrap();
        let e = authenticate(&store, "alice", "password-1", 40, Lockout::OFF)
            .await
            .unwrap_err();
        assert!(matches!(e, AccountError::InvalidCredentials), "{e}");
        let taken = add_user(&store, "ALICE", "password-1", None, "user", 50).await;
        assert!(matches!(
            taken,
            Err(AccountError::Store(StoreError::Duplicate(_)))
        ));
        assert!(matches!(
            add_user(&store, "carol", "password-1", None, "root", 50).await,
            Err(AccountError::BadRole)
        ));
    }

    #[tokio::test]
    async fn repeated_failures_lock_an_account_for_a_while() {
        let store = store().await;
        add_user(&store, "alice", "password-1", None, "user", 1)
            .await
            .unwrap();
        let lockout = Lockout {
            threshold: 3,
            seconds: 100,
            address: None,
        };
        let login = |password: &'static str, now| {
            let store = store.clone();
            async move { authenticate(&store, "alice", password, now, lockout).await }
        };
        // A success clears the count: two failures, a success, two failures lock nothing.
        for _ in 0..2 {
            assert!(matches!(
                login("wrong-pass", 10).await,
                Err(AccountError::InvalidCredentials)
            ));
        }
        login("password-1", 10).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(
                login("wrong-pass", 10).await,
                Err(AccountError::InvalidCredentials)
            ));
        }
        let e = login("wrong-pass", 10).await.unwrap_err();
        assert!(matches!(e, AccountError::LockedOut(110)), "{e:?}");
        // Locked: even the right password is refused, until the lock ends.
        let e = login("password-1", 109).await.unwrap_err();
        assert!(matches!(e, AccountError::Locked(110)), "{e:?}");
        login("password-1", 110).await.unwrap();
        assert_eq!(
            store.login_failures("alice").await.unwrap(),
            None,
            "cleared"
        );
        // Unknown names are counted and locked alike.
        for _ in 0..2 {
            let e = authenticate(&store, "nobody", "wrong-pass", 300, lockout).await;
            assert!(matches!(e, Err(AccountError::InvalidCredentials)));
        }
        let e = authenticate(&store, "nobody", "wrong-pass", 300, lockout).await;
        assert!(matches!(e, Err(AccountError::LockedOut(400))), "{e:?}");
        // An address that fails on many names is locked out of all of them.
        let from = Lockout {
            threshold: 0,
            seconds: 100,
            address: Some(("192.0.2.9".parse().unwrap(), 2)),
        };
        let e = authenticate(&store, "carol", "wrong-pass", 500, from).await;
        assert!(matches!(e, Err(AccountError::InvalidCredentials)), "{e:?}");
        let e = authenticate(&store, "dave", "wrong-pass", 500, from).await;
        assert!(
            matches!(e, Err(AccountError::AddressLockedOut(600))),
            "{e:?}"
        );
        let e = authenticate(&store, "alice", "password-1", 501, from).await;
        assert!(matches!(e, Err(AccountError::AddressLocked(600))), "{e:?}");
        let elsewhere = Lockout {
            address: Some(("192.0.2.10".parse().unwrap(), 2)),
            ..from
        };
        authenticate(&store, "alice", "password-1", 501, elsewhere)
            .await
            .unwrap();
        // Off: failures are not counted.
        for _ in 0..5 {
            let e = authenticate(&store, "alice", "wrong-pass", 200, Lockout::OFF).await;
            assert!(matches!(e, Err(AccountError::InvalidCredentials)));
        }
        assert_eq!(store.login_failures("alice").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_predecessors_users_import_and_move_to_argon2id_at_first_login() {
        let store = store().await;
        let hash = bcrypt::hash("old-password", 4).unwrap();
        let csv = format!(
            "username,hashed_password,email,is_active\n\
             alice,{hash},alice@example.org,true\n\
             bob,{hash},,false\n"
        );
        let imported = import_users(&store, &csv, 1).await.unwrap();
        assert_eq!(
            imported,
            Imported {
                added: 2,
                skipped: vec![]
            }
        );
        let again = import_users(&store, &csv, 2).await.unwrap();
        assert_eq!(again.skipped, ["alice", "bob"]);
        assert!(
            authenticate(&store, "bob", "old-password", 3, Lockout::OFF)
                .await
                .is_err(),
            "inactive"
        );
        let alice = authenticate(&store, "alice", "old-password", 3, Lockout::OFF)
            .await
            .unwrap();
        assert!(alice.password_hash.starts_with("$argon2id$"));
        let stored = store.user_by_name("alice").await.unwrap().unwrap();
        assert!(stored.password_hash.starts_with("$argon2id$"), "re-hashed");
        assert!(
            authenticate(&store, "alice", "old-password", 4, Lockout::OFF)
                .await
                .is_ok()
        );

        for (bad, says) in [
            ("name,pw\nx,y\n", "header"),
            ("username,hashed_password\nok-name,plaintext\n", "line 2"),
            ("username,hashed_password\nno way,$2b$04$x\n", "line 2"),
            (
                "username,hashed_password\nsam,$2b$04$x\nSAM,$2b$04$x\n",
                "line 3: the username appears twice",
            ),
        ] {
            let e = import_users(&store, bad, 5).await.unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_are_random_and_stored_as_their_hash() {
        let (a, a_hash) = new_secret();
        let (b, _) = new_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(a_hash, secret_hash(&a));
        assert_eq!(a_hash.len(), 64);
    }
}
