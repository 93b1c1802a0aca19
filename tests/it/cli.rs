//! The `switchboard` binary: token minting, config errors, and production's refusal of weak
//! secrets.

use std::process::{Command, Output};

use switchboard::auth::Tokens;
use switchboard::config::DEV_JWT_SECRET;

use crate::support::NodeProcess;
use crate::support::WAIT;
use crate::support::http_client;

fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SWITCHBOARD_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command.output().expect("run switchboard")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn token_mint_prints_a_token_the_node_accepts() {
    let out = switchboard(
        &[
            "token", "mint", "--user", "alice", "--name", "Alice", "--room", "team-*", "--ttl",
            "15m", "--admin",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let identity = Tokens::new(DEV_JWT_SECRET.as_bytes())
        .verify(token.trim())
        .unwrap();
    assert_eq!(
        (
            identity.user_id.as_str(),
            identity.name.as_str(),
            identity.admin
        ),
        ("alice", "Alice", true)
    );
}

#[test]
fn token_mint_uses_the_configured_secret() {
    let secret = "a-production-secret-of-forty-bytes-000000";
    let out = switchboard(
        &["token", "mint", "--user", "bob", "--name", "Bob"],
        &[("SWITCHBOARD_JWT_SECRET", secret)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(Tokens::new(secret.as_bytes()).verify(token.trim()).is_ok());
    assert!(
        Tokens::new(DEV_JWT_SECRET.as_bytes())
            .verify(token.trim())
            .is_err()
    );
}

#[test]
fn token_mint_refuses_bad_arguments() {
    let cases: &[&[&str]] = &[
        &["token", "mint", "--name", "NoUser"],
        &["token", "mint", "--user", "has space", "--name", "X"],
        &["token", "mint", "--user", "u", "--name", ""],
        &[
            "token", "mint", "--user", "u", "--name", "X", "--ttl", "forever",
        ],
        &["token", "mint", "--user", "u", "--name", "X", "--ttl", "0s"],
        &[
            "token", "mint", "--user", "u", "--name", "X", "--room", "bad room",
        ],
        &["token", "frobnicate"],
        &["--no-such-flag"],
    ];
    for args in cases {
        let out = switchboard(args, &[]);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?} printed a token");
        assert!(!stderr(&out).is_empty(), "{args:?} explained nothing");
    }
}

#[test]
fn production_refuses_to_start_with_a_weak_secret() {
    for secret in [None, Some("short-secret"), Some(DEV_JWT_SECRET)] {
        let mut env = vec![
            ("SWITCHBOARD_ENV", "production"),
            (
                "SWITCHBOARD_DATA_KEY",
                "TVwOw8QWITOAn2/Q4vnPT4hhdHHIfGspL9NPW1R0VrA=",
            ),
            ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ];
        if let Some(s) = secret {
            env.push(("SWITCHBOARD_JWT_SECRET", s));
        }
        let out = switchboard(&["serve"], &env);
        assert_eq!(out.status.code(), Some(2), "{secret:?}");
        let message = stderr(&out);
        assert!(message.contains("SWITCHBOARD_JWT_SECRET"), "{message}");
        if let Some(s) = secret {
            assert!(
                !message.contains(s),
                "the secret itself was printed: {message}"
            );
        }
    }
}

#[test]
fn bad_config_names_the_setting() {
    for (var, value) in [
        ("SWITCHBOARD_MAX_MEMBERS_PER_ROOM", "ten"),
        ("SWITCHBOARD_MAX_MEMBERS_PER_ROOM", "-1"),
        ("SWITCHBOARD_WORKER_THREADS", "100000"),
        ("SWITCHBOARD_LOG_FORMAT", "yaml"),
    ] {
        let out = switchboard(&["serve"], &[(var, value)]);
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        assert!(
            stderr(&out).contains(var),
            "{var}={value}: {}",
            stderr(&out)
        );
    }
    let out = switchboard(&["--config", "/nonexistent/switchboard.toml", "serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/switchboard.toml"));
}

#[test]
fn predecessor_variables_get_one_warning_each_naming_the_replacement() {
    let mut node = NodeProcess::start(&[
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("PORT", "8000"),
        ("JWT_SECRET_KEY", "hunter2-predecessor-secret"),
        ("TURNSERVER_SECRET", "turn-predecessor-secret"),
        ("RATE_LIMIT_PER_MINUTE", "60"),
        ("ENCRYPTION_KEY", "a-predecessor-data-key"),
    ]);
    node.address();
    let log = node.log.join("\n");
    for (variable, replacement) in [
        ("PORT", "use SWITCHBOARD_LISTEN"),
        ("JWT_SECRET_KEY", "use SWITCHBOARD_JWT_SECRET"),
        ("TURNSERVER_SECRET", "use SWITCHBOARD_TURN_SECRET"),
        (
            "RATE_LIMIT_PER_MINUTE",
            "use SWITCHBOARD_MSG_RATE and SWITCHBOARD_MSG_BURST",
        ),
        ("ENCRYPTION_KEY", "use SWITCHBOARD_DATA_KEY"),
    ] {
        let warned: Vec<_> = node
            .log
            .iter()
            .filter(|l| l.contains(&format!("{variable} is a predecessor's setting")))
            .collect();
        assert_eq!(warned.len(), 1, "{variable}: {log}");
        assert!(warned[0].contains(replacement), "{}", warned[0]);
    }
    assert!(
        !log.contains("hunter2")
            && !log.contains("turn-predecessor")
            && !log.contains("a-predecessor-data-key"),
        "{log}"
    );
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn the_banner_shows_the_command_that_started_the_node() {
    let mut node = NodeProcess::start(&[("SWITCHBOARD_LISTEN", "127.0.0.1:0")]);
    node.address();
    let line = node.wait_for("get a token:", WAIT);
    let binary = env!("CARGO_BIN_EXE_switchboard");
    assert!(
        line.contains(&format!("{binary} token mint --user alice")),
        "{line}"
    );
    node.wait_for("reads the same settings", WAIT);
    drop(node);

    let mut node = NodeProcess::start(&[("SWITCHBOARD_LISTEN", "127.0.0.1:0"), ("CARGO", "cargo")]);
    node.address();
    let line = node.wait_for("get a token:", WAIT);
    let profile = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    let command = format!("cargo run{profile} -- token mint");
    assert!(line.contains(&command), "{line}");
}

#[test]
fn predecessor_variables_are_named_when_the_config_fails_and_for_token_mint() {
    // A migrating operator's usual first failure: production without SWITCHBOARD_JWT_SECRET,
    // the predecessor's JWT_SECRET_KEY still set.
    let out = switchboard(
        &["serve"],
        &[
            ("SWITCHBOARD_ENV", "production"),
            (
                "SWITCHBOARD_DATA_KEY",
                "TVwOw8QWITOAn2/Q4vnPT4hhdHHIfGspL9NPW1R0VrA=",
            ),
            ("JWT_SECRET_KEY", "the-old-secret-value"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains("SWITCHBOARD_JWT_SECRET"), "{message}");
    assert!(
        message.contains("JWT_SECRET_KEY is a predecessor's setting and is not applied"),
        "{message}"
    );
    assert!(!message.contains("the-old-secret-value"), "{message}");

    let out = switchboard(
        &["token", "mint", "--user", "u", "--name", "U"],
        &[("SECRET_KEY", "old")],
    );
    assert!(out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(
            "SECRET_KEY is a predecessor's setting and is not applied; use SWITCHBOARD_JWT_SECRET"
        ),
        "{message}"
    );
}

#[test]
fn migrate_creates_the_sqlite_database_and_is_idempotent() {
    let dir = std::env::temp_dir().join(format!("sb-migrate-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/data/switchboard.db", dir.display());
    for _ in 0..2 {
        let out = switchboard(&["migrate"], &[("SWITCHBOARD_DATABASE_URL", &url)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let said = String::from_utf8(out.stdout).unwrap();
        let n = std::fs::read_dir("migrations/sqlite").unwrap().count();
        let applied = format!("{n} migrations applied, latest {n}");
        assert!(said.contains(&applied), "{said}");
    }
    assert!(dir.join("data/switchboard.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs Postgres: run scripts/test"]
fn migrate_applies_to_postgres() {
    let url = std::env::var("SWITCHBOARD_TEST_DATABASE_URL").expect("run scripts/test");
    let out = switchboard(&["migrate"], &[("SWITCHBOARD_DATABASE_URL", &url)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = switchboard(&["migrate"], &[("SWITCHBOARD_DATABASE_URL", &url)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8(out.stdout).unwrap().contains("latest 5"));
}

#[test]
fn migrate_refuses_unreachable_and_foreign_databases_without_showing_passwords() {
    for (url, code) in [
        ("mysql://u:hunter2@127.0.0.1/db", 2),
        ("postgres://u:hunter2@127.0.0.1:1/db", 1),
    ] {
        let out = switchboard(&["migrate"], &[("SWITCHBOARD_DATABASE_URL", url)]);
        assert_eq!(out.status.code(), Some(code), "{url}: {}", stderr(&out));
        assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    }
}

#[test]
fn user_commands_manage_accounts_in_the_configured_database() {
    let dir = std::env::temp_dir().join(format!("sb-users-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/switchboard.db", dir.display());
    let run = |args: &[&str]| switchboard(args, &[("SWITCHBOARD_DATABASE_URL", &url)]);
    let out = run(&[
        "user",
        "add",
        "alice:password-1:alice@example.org",
        "--admin",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (args, error) in [
        (&["user", "add", "ALICE:password-2"][..], "already exists"),
        (&["user", "add", "al:password-1"][..], "username must be"),
        (&["user", "add", "bob:short"][..], "password must be"),
        (&["user", "add", "bob"][..], "NAME:PASSWORD"),
        (&["user", "remove", "nobody"][..], "no user nobody"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(error), "{args:?}: {}", stderr(&out));
    }
    assert!(
        run(&["user", "passwd", "alice:password-9"])
            .status
            .success()
    );
    assert!(run(&["user", "disable", "Alice"]).status.success());
    let list = String::from_utf8(run(&["user", "list"]).stdout).unwrap();
    let row = list
        .lines()
        .find(|l| l.starts_with("alice"))
        .expect("alice listed");
    assert!(
        row.contains("admin") && row.contains(" no ") && row.contains("alice@example.org"),
        "{row}"
    );
    assert!(!list.contains("argon2"), "no hash shown: {list}");
    let csv = dir.join("users.csv");
    let hash = bcrypt::hash("old-password", 4).unwrap();
    let rows =
        format!("username,hashed_password,email\nalice,{hash},\ncarol,{hash},c@example.org\n");
    std::fs::write(&csv, rows).unwrap();
    let out = run(&["user", "import", csv.to_str().unwrap()]);
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains("imported 1 users") && said.contains("skipped alice"),
        "{said}"
    );
    std::fs::write(&csv, "username,password\nx,y\n").unwrap();
    let out = run(&["user", "import", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("header"), "{}", stderr(&out));
    assert!(run(&["user", "remove", "carol"]).status.success());
    assert!(run(&["user", "remove", "alice"]).status.success());
    let list = String::from_utf8(run(&["user", "list"]).stdout).unwrap();
    assert_eq!(list.lines().count(), 1, "{list}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_development_node_creates_demo_accounts_once_and_production_never() {
    let dir = std::env::temp_dir().join(format!("sb-demo-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/switchboard.db", dir.display());
    let env = [
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_DATABASE_URL", url.as_str()),
    ];
    let mut node = NodeProcess::start(&env);
    let addr = node.address();
    node.wait_for("demo accounts on this empty development database", WAIT);
    let alice = node.wait_for("alice / ", WAIT);
    let password = alice
        .split(" / ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(password.len(), 16);
    let response = http_client()
        .post(format!("http://{addr}/auth/login"))
        .json(&serde_json::json!({"username": "alice", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(node);

    let mut again = NodeProcess::start(&env);
    again.wait_for("connected; serving", WAIT);
    assert!(
        !again.log.iter().any(|l| l.contains("demo accounts")),
        "{:?}",
        again.log
    );
    drop(again);

    let secret = "a-production-secret-of-forty-bytes-000000";
    let mut production = NodeProcess::start(&[
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_ENV", "production"),
        (
            "SWITCHBOARD_DATA_KEY",
            "TVwOw8QWITOAn2/Q4vnPT4hhdHHIfGspL9NPW1R0VrA=",
        ),
        ("SWITCHBOARD_JWT_SECRET", secret),
        ("SWITCHBOARD_CORS_ORIGINS", "https://app.example"),
        ("SWITCHBOARD_ALLOWED_ORIGINS", "https://app.example"),
    ]);
    production.wait_for("connected; serving", WAIT);
    assert!(
        !production.log.iter().any(|l| l.contains("demo accounts")),
        "{:?}",
        production.log
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_rotate_key_reports_the_current_key_and_refuses_bad_input() {
    let dir = std::env::temp_dir().join(format!("sb-rotate-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/switchboard.db", dir.display());
    let key = "TVwOw8QWITOAn2/Q4vnPT4hhdHHIfGspL9NPW1R0VrA=";
    let settings = [
        ("SWITCHBOARD_DATABASE_URL", url.as_str()),
        ("SWITCHBOARD_DATA_KEY", key),
    ];
    let out = switchboard(&["data", "rotate-key", "--batch", "50"], &settings);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = switchboard::config::Config::load(
        None,
        &[("SWITCHBOARD_DATA_KEY".to_owned(), key.to_owned())].into(),
    )
    .unwrap()
    .data_keys()
    .current_id()
    .to_owned();
    assert!(said.contains(&format!("data key {id}")), "{said}");
    assert!(!said.contains(key) && !stderr(&out).contains(key));

    let out = switchboard(&["data", "rotate-key", "--batch", "0"], &settings);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let bad_previous = [
        ("SWITCHBOARD_DATABASE_URL", url.as_str()),
        ("SWITCHBOARD_DATA_KEY", key),
        ("SWITCHBOARD_DATA_KEY_PREVIOUS", "AAAA"),
    ];
    let out = switchboard(&["data", "rotate-key"], &bad_previous);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("SWITCHBOARD_DATA_KEY_PREVIOUS"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
