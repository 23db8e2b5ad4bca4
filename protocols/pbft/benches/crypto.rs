//! What PBFT's authentication costs on this machine: ed25519 sign and verify of the
//! 32-byte digests PBFT signs, batch verification of a quorum's worth of signatures, and
//! blake3 over client requests of several sizes (the request and batch digests).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use qlab_core::{ClientId, Op, Request};

fn keys(count: u32) -> Vec<SigningKey> {
    (0..count).map(|n| SigningKey::from_bytes(&qlab_pbft::node_secret(1, n))).collect()
}

fn sign_and_verify(c: &mut Criterion) {
    let key = &keys(1)[0];
    let digest = *blake3::hash(b"pre-prepare view 3 seq 17").as_bytes();
    let signature = key.sign(&digest);
    let public: VerifyingKey = key.verifying_key();
    let mut group = c.benchmark_group("ed25519");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| b.iter(|| key.sign(std::hint::black_box(&digest))));
    group.bench_function("verify", |b| b.iter(|| public.verify(std::hint::black_box(&digest), &signature).unwrap()));
    group.finish();
}

/// A prepared certificate at f = 1, 2, 4 holds 2f prepares; a NEW-VIEW checks many.
fn batch_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("ed25519_batch_verify");
    for count in [2usize, 4, 8, 16, 64] {
        let keys = keys(count as u32);
        let messages: Vec<[u8; 32]> =
            (0..count).map(|i| *blake3::hash(format!("prepare {i}").as_bytes()).as_bytes()).collect();
        let signatures: Vec<Signature> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        let publics: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let slices: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::new("batch", count), &count, |b, _| {
            b.iter(|| ed25519_dalek::verify_batch(&slices, &signatures, &publics).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("one_by_one", count), &count, |b, _| {
            b.iter(|| {
                for ((m, s), p) in messages.iter().zip(&signatures).zip(&publics) {
                    p.verify(m, s).unwrap();
                }
            })
        });
    }
    group.finish();
}

fn request_digest(c: &mut Criterion) {
    let mut group = c.benchmark_group("blake3_request_digest");
    for value_bytes in [16usize, 128, 1024, 4096] {
        let request = Request::new(ClientId(1), 7, Op::Put { key: 3, value: vec![7; value_bytes] });
        group.throughput(Throughput::Bytes(value_bytes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(value_bytes), &request, |b, r| b.iter(|| r.digest()));
    }
    group.finish();
}

criterion_group!(benches, sign_and_verify, batch_verify, request_digest);
criterion_main!(benches);
