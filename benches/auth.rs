//! The cost of authentication per request, without I/O: verifying an access token (every
//! WebSocket and REST request that carries one) and checking a password (every login: argon2id
//! with the crate's default cost, m = 19 MiB, t = 2, p = 1). `cargo bench --bench auth`;
//! figures in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard::accounts;
use switchboard::auth::{self, Tokens};
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

criterion_group!(benches, verify_token, check_password);
criterion_main!(benches);
