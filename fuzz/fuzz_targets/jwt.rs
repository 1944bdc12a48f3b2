//! JWT parsing and verification with fixed keys (an HS256 secret and an RS256
//! public key): never panics, and nothing unsigned is ever accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidegate_auth::{Algorithm, JwtConfig, KeySource, Verifier};

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        Verifier::new(JwtConfig {
            keys: vec![
                KeySource::Secret {
                    alg: Algorithm::HS256,
                    secret: b"fuzz-secret".to_vec(),
                    kid: None,
                },
                KeySource::PublicPem {
                    alg: Algorithm::RS256,
                    pem: include_bytes!("../../crates/tidegate-auth/tests/keys/rsa_public.pem")
                        .to_vec(),
                    kid: Some("rsa".into()),
                },
            ],
            ..JwtConfig::default()
        })
        .expect("fixed keys")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = verifier().verify_at(token, 1_700_000_000) {
        let _ = (e.status(), e.to_string());
    }
});
