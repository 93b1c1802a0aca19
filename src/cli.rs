//! `switchboard user ...` and `switchboard apikey ...`: account and key administration on the
//! configured database (the one the nodes use). What stops tokens (a disabled account, a new
//! password, a revoked key) is written as a revocation, which every node reads from the store
//! within seconds. Each change is recorded as a security event.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;
use switchboard::accounts::{self, AccountError};
use switchboard::auth::{Revocation, unix_seconds as now};
use switchboard::config::Config;
use switchboard::store::{Rotated, SEALED_COLUMNS, SecurityEvent, Store, StoreError};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add an account: NAME, NAME:PASSWORD or NAME:PASSWORD:EMAIL (without a password, it is
    /// asked for on the terminal, without echo).
    Add {
        spec: String,
        /// Give the account the `admin` role.
        #[arg(long)]
        admin: bool,
    },
    /// Remove an account and its refresh tokens.
    Remove { name: String },
    /// List the accounts.
    List,
    /// Set an account's password: NAME or NAME:PASSWORD (asked for when not given).
    Passwd { spec: String },
    /// Disable an account: it can no longer log in.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// Lift a lockout after too many failed logins: of a name, or of an address.
    Unlock { name: String },
    /// Import a predecessor's users CSV (bcrypt hashes kept; re-hashed with argon2id at each
    /// user's first login). Existing usernames are skipped.
    Import { file: std::path::PathBuf },
}

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key: prints its id (the `kid` of the tokens it signs) and its secret,
    /// once.
    Create { name: String },
    /// List the API keys (never their secrets).
    List,
    /// Revoke an API key by id or name: its tokens stop on every node.
    Revoke { key: String },
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Re-seal every encrypted column under `data_key`: values sealed under an older key
    /// (listed in `data_key_previous`, which still opens them) are sealed again, `--batch`
    /// rows at a time. Safe to run while nodes serve, and again after an interruption.
    RotateKey {
        /// Rows read per batch.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch: i64,
    },
}

/// Runs `task` on the configured database.
fn on_store<F>(config: &Config, task: impl FnOnce(Store) -> F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = switchboard::backends::open_store(config).await?;
        let result = task(store.clone()).await;
        store.close().await;
        result
    })
}

pub fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    on_store(config, |store| async move { run(&store, command).await })
}

pub fn apikey(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    on_store(config, |store| async move {
        run_apikey(&store, config, command).await
    })
}

pub fn data(config: &Config, command: DataCommand) -> anyhow::Result<()> {
    let DataCommand::RotateKey { batch } = command;
    on_store(config, |store| async move {
        let keys = config.data_keys();
        let mut total = Rotated::default();
        for column in SEALED_COLUMNS {
            let done = store.rotate_column(column, &keys, batch).await?;
            println!(
                "{}.{}: {} re-sealed, {} already under the current key, {} opened with no key",
                column.table, column.column, done.resealed, done.current, done.failed
            );
            total += done;
        }
        println!(
            "data key {}: {} values re-sealed, {} already current",
            keys.current_id(),
            total.resealed,
            total.current
        );
        if total.failed > 0 {
            anyhow::bail!(
                "{} values open with none of the configured data keys: add the key that sealed \
                 them to data_key_previous (SWITCHBOARD_DATA_KEY_PREVIOUS) and run again",
                total.failed
            );
        }
        Ok(())
    })
}

/// Records a security event of the command line.
async fn event(store: &Store, kind: &str, user: Option<(&str, &str)>, detail: Option<String>) {
    let event = SecurityEvent {
        id: 0,
        at: now(),
        kind: kind.to_owned(),
        user_id: user.map(|(id, _)| id.to_owned()),
        username: user.map(|(_, name)| name.to_owned()),
        ip: None,
        detail: Some(detail.map_or_else(|| "cli".to_owned(), |d| format!("cli: {d}"))),
    };
    accounts::record_event(store, event).await;
}

/// Stops every token of `user_id` issued until now, on every node.
async fn revoke_tokens_of(store: &Store, user_id: &str) -> anyhow::Result<()> {
    let now = now();
    // As long as any token may live: the longest max_token_lifetime a node accepts (whatever
    // this command's own configuration says) and the clock skew tolerated.
    let lifetime = 366 * 86_400 + i64::try_from(switchboard::auth::LEEWAY_SECS).unwrap_or(0);
    let revocation = Revocation::User {
        user: user_id.to_owned(),
        // Tokens issued earlier; one issued in this second (a login with the new password)
        // lives on.
        before: u64::try_from(now).unwrap_or(0),
        expires_at: u64::try_from(now.saturating_add(lifetime)).unwrap_or(u64::MAX),
    };
    store.add_revocation(&revocation, now).await?;
    store.revoke_user_tokens(user_id).await?;
    Ok(())
}

async fn run_apikey(store: &Store, config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create { name } => {
            let sealer = switchboard::credentials::sealer(config);
            let (key, secret) = accounts::create_api_key(store, &sealer, &name, now())
                .await
                .map_err(|e| match e {
                    AccountError::Store(StoreError::Duplicate(_)) => {
                        anyhow::anyhow!("a live API key is named {name:?} already")
                    }
                    e => anyhow::Error::new(e),
                })?;
            event(
                store,
                "api_key_created",
                None,
                Some(format!("{} {:?}", key.id, key.name)),
            )
            .await;
            println!("API key {:?} created.", key.name);
            println!("key id: {}", key.id);
            println!("secret: {secret}");
            println!(
                "Sign HS256 tokens with the secret and put the key id in the header's `kid` \
                 (docs/auth.md). The secret is not shown again."
            );
        }
        ApiKeyCommand::List => {
            println!("{:<28} {:<24} {:<20} revoked", "id", "name", "created");
            for key in store.api_keys().await? {
                let revoked = key.revoked_at.map_or_else(|| "-".to_owned(), rfc3339);
                println!(
                    "{:<28} {:<24} {:<20} {revoked}",
                    key.id,
                    key.name,
                    rfc3339(key.created_at)
                );
            }
        }
        ApiKeyCommand::Revoke { key } => {
            let key = accounts::find_api_key(store, &key).await?;
            // The revocation first: once stored, every node stops the key's tokens, and a
            // failure after it leaves nothing that a second run would not repeat.
            let revocation = Revocation::Key {
                kid: key.id.clone(),
            };
            store.add_revocation(&revocation, now()).await?;
            let was_live = store.revoke_api_key(&key.id, now()).await?;
            event(
                store,
                "api_key_revoked",
                None,
                Some(format!("{} {:?}", key.id, key.name)),
            )
            .await;
            let again = if was_live { "" } else { " (again)" };
            println!(
                "revoked API key {} ({:?}){again}; its tokens stop on every node within seconds",
                key.id, key.name
            );
        }
    }
    Ok(())
}

async fn run(store: &Store, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { spec, admin } => {
            let mut parts = spec.splitn(3, ':');
            let name = parts.next().unwrap_or_default();
            let password = match parts.next() {
                Some(password) => password.to_owned(),
                None => ask_password(name)?,
            };
            let email = parts.next().filter(|e| !e.is_empty());
            let role = if admin { "admin" } else { "user" };
            let user = accounts::add_user(store, name, &password, email, role, now())
                .await
                .map_err(explain)?;
            event(store, "user_added", Some((&user.id, &user.username)), None).await;
            println!("added {} ({}, id {})", user.username, user.role, user.id);
        }
        UserCommand::Remove { name } => {
            let user = accounts::find(store, &name).await.map_err(explain)?;
            revoke_tokens_of(store, &user.id).await?;
            store.remove_user(&user.id).await?;
            event(
                store,
                "user_removed",
                Some((&user.id, &user.username)),
                None,
            )
            .await;
            println!("removed {}", user.username);
        }
        UserCommand::List => list(store).await?,
        UserCommand::Passwd { spec } => {
            let (name, password) = match spec.split_once(':') {
                Some((name, password)) => (name.to_owned(), password.to_owned()),
                None => (spec.clone(), ask_password(&spec)?),
            };
            accounts::set_password(store, &name, &password)
                .await
                .map_err(explain)?;
            let user = accounts::find(store, &name).await.map_err(explain)?;
            revoke_tokens_of(store, &user.id).await?;
            event(
                store,
                "password_changed",
                Some((&user.id, &user.username)),
                None,
            )
            .await;
            println!("password of {name} changed; its earlier tokens are revoked");
        }
        UserCommand::Disable { name } => set_active(store, &name, false).await?,
        UserCommand::Enable { name } => set_active(store, &name, true).await?,
        UserCommand::Unlock { name } if name.parse::<std::net::IpAddr>().is_ok() => {
            let ip = name.parse().expect("checked");
            let key = format!("ip:{}", switchboard::client_ip::budget_key(ip));
            let was = store.clear_login_failures(&key).await?;
            event(store, "address_unlocked", None, Some(name.clone())).await;
            let state = if was {
                "unlocked"
            } else {
                "nothing to unlock for"
            };
            println!("{state} {name}");
        }
        UserCommand::Unlock { name } => {
            let user = accounts::find(store, &name).await.map_err(explain)?;
            store.clear_login_failures(&user.username).await?;
            event(
                store,
                "user_unlocked",
                Some((&user.id, &user.username)),
                None,
            )
            .await;
            println!("unlocked {}", user.username);
        }
        UserCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let imported = accounts::import_users(store, &text, now())
                .await
                .with_context(|| format!("importing {}", file.display()))?;
            println!("imported {} users", imported.added);
            for name in imported.skipped {
                println!("skipped {name}: the username exists");
            }
        }
    }
    Ok(())
}

async fn set_active(store: &Store, name: &str, active: bool) -> anyhow::Result<()> {
    let user = accounts::find(store, name).await.map_err(explain)?;
    store.set_active(&user.id, active).await?;
    if !active {
        revoke_tokens_of(store, &user.id).await?;
    }
    let kind = if active {
        "user_enabled"
    } else {
        "user_disabled"
    };
    event(store, kind, Some((&user.id, &user.username)), None).await;
    let state = if active { "enabled" } else { "disabled" };
    println!("{state} {}", user.username);
    Ok(())
}

async fn list(store: &Store) -> anyhow::Result<()> {
    let users = store.users().await?;
    println!(
        "{:<24} {:<6} {:<8} {:<20} email",
        "username", "role", "active", "last login"
    );
    for user in users {
        let login = user
            .last_login_at
            .map_or_else(|| "never".to_owned(), rfc3339);
        let email = user.email.as_deref().unwrap_or("-");
        let active = if user.active { "yes" } else { "no" };
        println!(
            "{:<24} {:<6} {:<8} {:<20} {email}",
            user.username, user.role, active, login
        );
    }
    Ok(())
}

fn rfc3339(seconds: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Asks for a password twice on the terminal, without echo.
fn ask_password(name: &str) -> anyhow::Result<String> {
    let first = rpassword::prompt_password(format!("password for {name}: "))
        .context("no terminal to ask for the password on: give it as NAME:PASSWORD")?;
    let again = rpassword::prompt_password("again: ")?;
    if first != again {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// A clear message for the account errors a person can fix.
fn explain(e: AccountError) -> anyhow::Error {
    match e {
        AccountError::Store(StoreError::Duplicate(_)) => {
            anyhow::anyhow!("a user with this username already exists")
        }
        e => anyhow::Error::new(e),
    }
}
