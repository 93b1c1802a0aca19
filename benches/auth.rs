//! The cost of authentication, per request: verifying an access token from each source
//! (every WebSocket and REST request carries one; the checks against revocations included), and
//! a login, alone (argon2id with the crate's default cost, m = 19 MiB, t = 2, p = 1) and end to
//! end through a node's `POST /auth/login`, with concurrent logins against the bare password
//! checks on every core in the same run (the floor). `cargo bench --bench auth`; figures in
//! BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use switchboard::accounts;
use switchboard::auth::{self, ApiKeyId, IssuerRules, Revocation, Revoked, Tokens, jwks};
use switchboard::config::{Config, Secret};
use switchboard::protocol::UserId;

fn verify_token(c: &mut Criterion) {
    let tokens = Tokens::new(b"a-production-secret-of-forty-bytes-000000");
    let user = UserId::parse("3f1c2a9e-8d7b-4e0f-9a6c-1b2d3e4f5a6b").unwrap();
    let mut claims = auth::claims(&user, "Alice Example", Duration::from_secs(3600));
    claims.rooms = Some(vec!["team-*".into(), "lobby".into()]);
    let token = tokens.mint(&claims);
    c.bench_function("verify_access_token_hs256", |b| {
        b.iter(|| tokens.verify(black_box(&token)).unwrap())
    });
}

fn check_password(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hash = runtime
        .block_on(accounts::hash_password("correct horse battery"))
        .unwrap();
    let mut group = c.benchmark_group("login");
    group.sample_size(20);
    group.bench_function("verify_password_argon2id_default", |b| {
        b.iter(|| {
            runtime.block_on(accounts::verify_password(
                black_box("correct horse battery"),
                &hash,
            ))
        })
    });
    group.finish();
}

/// Tokens of API keys and of an external issuer (RS256, ES256, EdDSA), and the node's own
/// token checked against 10,000 revocations of other tokens.
fn verify_other_sources(c: &mut Criterion) {
    let revoked = Arc::new(Revoked::default());
    let tokens = Tokens::new(b"a-production-secret-of-forty-bytes-000000")
        .with_issuer_rules(IssuerRules {
            issuer: Some("https://idp.example".into()),
            audience: Some("switchboard".into()),
        })
        .with_revocations(Arc::clone(&revoked));
    let now = auth::unix_now();
    let claims = serde_json::json!({
        "sub": "3f1c2a9e-8d7b-4e0f-9a6c-1b2d3e4f5a6b", "name": "Alice Example",
        "iat": now, "exp": now + 3600, "jti": "0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a",
        "iss": "https://idp.example", "aud": "switchboard",
    });
    let sign = |alg, kid: &str, key: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let api = ApiKeyId::generate();
    tokens.add_api_key(api.clone(), b"an-api-key-secret-of-43-characters-0000000");
    let api_token = sign(
        Algorithm::HS256,
        api.as_str(),
        &EncodingKey::from_secret(b"an-api-key-secret-of-43-characters-0000000"),
    );
    let fixture = |name: &str| {
        let path = format!(
            "{}/tests/fixtures/issuer/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).unwrap()
    };
    let issuer = [
        (
            "rsa-1",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&fixture("rsa.pem")).unwrap(),
        ),
        (
            "ec-1",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&fixture("ec.pem")).unwrap(),
        ),
        (
            "ed-1",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&fixture("ed.pem")).unwrap(),
        ),
    ];
    let jwks: Vec<Jwk> = issuer
        .iter()
        .map(|(kid, alg, key)| {
            let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    let (keys, _) = jwks::parse(jwks::document(jwks).as_bytes()).unwrap();
    tokens.set_issuer_keys(keys);
    c.bench_function("verify_api_key_token_hs256", |b| {
        b.iter(|| tokens.verify(black_box(&api_token)).unwrap())
    });
    for (kid, alg, key) in &issuer {
        let token = sign(*alg, kid, key);
        c.bench_function(&format!("verify_issuer_token_{alg:?}"), |b| {
            b.iter(|| tokens.verify(black_box(&token)).unwrap())
        });
    }
    for n in 0..10_000u64 {
        revoked.add(&Revocation::Token {
            jti: format!("revoked-{n}"),
            expires_at: now + 3600,
        });
    }
    c.bench_function("verify_api_key_token_hs256_10k_revocations", |b| {
        b.iter(|| tokens.verify(black_box(&api_token)).unwrap())
    });
}

/// Logins per second: `CONCURRENT` logins at a time through a node's `POST /auth/login`, and,
/// as the floor, as many bare argon2id checks at a time, the most the node could do.
fn logins(c: &mut Criterion) {
    const CONCURRENT: usize = 32;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (url, hash) = runtime.block_on(async {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        config.database.url = Secret::new("sqlite::memory:");
        // One address logging in as fast as it can: no limits in the way of the measurement.
        config.lockout_threshold = 0;
        config.lockout_address_threshold = 0;
        config.auth_rate = 0;
        let node = switchboard::app::node_id(&config);
        let store = switchboard::backends::open_store(&config).await.unwrap();
        accounts::add_user(&store, "alice", "correct horse battery", None, "user", 1)
            .await
            .unwrap();
        let backends = switchboard::backends::Backends::standalone(&node, store);
        let listener = switchboard::app::bind(config.listen).unwrap();
        let url = format!("http://{}/auth/login", listener.local_addr().unwrap());
        let state = switchboard::app::build(config, node, backends);
        tokio::spawn(switchboard::app::serve_state(
            state,
            switchboard::app::Listeners::public_only(listener),
            std::future::pending(),
        ));
        let hash = accounts::hash_password("correct horse battery")
            .await
            .unwrap();
        (url, hash)
    });
    let client = reqwest::Client::new();
    let body = serde_json::json!({"username": "alice", "password": "correct horse battery"});
    let mut group = c.benchmark_group("logins");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(CONCURRENT as u64));
    group.bench_function("floor_argon2id_checks", |b| {
        b.iter_custom(|rounds| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..rounds {
                    let checks = (0..CONCURRENT).map(|_| {
                        let hash = hash.clone();
                        tokio::spawn(async move {
                            accounts::verify_password("correct horse battery", &hash).await
                        })
                    });
                    for check in checks.collect::<Vec<_>>() {
                        assert!(check.await.unwrap());
                    }
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("post_auth_login", |b| {
        b.iter_custom(|rounds| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..rounds {
                    let posts = (0..CONCURRENT).map(|_| {
                        let request = client.post(&url).json(&body).send();
                        tokio::spawn(request)
                    });
                    for post in posts.collect::<Vec<_>>() {
                        assert_eq!(post.await.unwrap().unwrap().status(), 200);
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    verify_token,
    verify_other_sources,
    check_password,
    logins
);
criterion_main!(benches);
