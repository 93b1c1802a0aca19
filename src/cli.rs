//! `switchboard user ...`: account administration on the configured database (the one the
//! nodes use, so a running cluster sees the change at once).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;
use switchboard::accounts::{self, AccountError};
use switchboard::config::Config;
use switchboard::store::{Store, StoreError};

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
    /// Import a predecessor's users CSV (bcrypt hashes kept; re-hashed with argon2id at each
    /// user's first login). Existing usernames are skipped.
    Import { file: std::path::PathBuf },
}

/// Unix seconds now.
pub fn now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = switchboard::backends::open_store(config).await?;
        let result = run(&store, command).await;
        store.close().await;
        result
    })
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
            println!("added {} ({}, id {})", user.username, user.role, user.id);
        }
        UserCommand::Remove { name } => {
            let user = accounts::find(store, &name).await.map_err(explain)?;
            store.remove_user(&user.id).await?;
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
            let revoked = store.revoke_user_tokens(&user.id).await?;
            println!("password of {name} changed; {revoked} refresh tokens revoked");
        }
        UserCommand::Disable { name } => set_active(store, &name, false).await?,
        UserCommand::Enable { name } => set_active(store, &name, true).await?,
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
        store.revoke_user_tokens(&user.id).await?;
    }
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
