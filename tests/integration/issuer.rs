//! A test identity provider: an RS256, an ES256 and an EdDSA key made in the test, their JWKS,
//! and tokens — genuine ones, and the forgeries the services must refuse. No network: the
//! services get the JWKS, issuer and audience through `--config` at deploy.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://idp.test.example/realms/city";
pub const AUDIENCE: &str = "doppel-services";

/// Every role the shipped services know: what the services' own tests call with.
pub const ALL_ROLES: &[&str] = &[
    "case-worker",
    "registry-officer",
    "data-protection-officer",
    "office-staff",
];

pub struct Issuer {
    rsa: EncodingKey,
    ec: EncodingKey,
    ed: EncodingKey,
    /// The RSA public key's bytes: the "secret" of the HMAC-with-the-public-key forgery.
    rsa_public: Vec<u8>,
    jwks: String,
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl Issuer {
    /// The one issuer of this test process (RSA key generation takes a moment).
    pub fn shared() -> &'static Issuer {
        static ISSUER: OnceLock<Issuer> = OnceLock::new();
        ISSUER.get_or_init(Issuer::new)
    }

    fn new() -> Issuer {
        use rsa::Generate as _;
        use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
        let private = rsa::PrivateKey::generate();
        let rsa = EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes());
        let rsa_public = private
            .to_public_key()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        let ec_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ec = EncodingKey::from_ec_der(&ec_pair.serialize_der());
        let ed_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ed = EncodingKey::from_ed_der(&ed_pair.serialize_der());

        let named = |mut jwk: Jwk, kid: &str| {
            jwk.common.key_id = Some(kid.into());
            serde_json::to_value(jwk).unwrap()
        };
        let keys = vec![
            named(
                Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap(),
                "rsa",
            ),
            named(Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap(), "ec"),
            json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "ed",
                   "x": B64.encode(ed_pair.public_key_raw())}),
        ];
        let jwks = json!({ "keys": keys }).to_string();
        // The services parse it with the same crate: check it is a key set before using it.
        let _: JwkSet = serde_json::from_str(&jwks).unwrap();
        Issuer {
            rsa,
            ec,
            ed,
            rsa_public,
            jwks,
        }
    }

    /// The `--config` flags that make a service trust this issuer.
    pub fn deploy_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            format!("AUTH_ISSUER={ISSUER}"),
            "--config".into(),
            format!("AUTH_AUDIENCE={AUDIENCE}"),
            "--config".into(),
            format!("AUTH_JWKS={}", self.jwks),
        ]
    }

    /// Claims of a genuine token for `sub` with `roles`, valid for ten minutes.
    pub fn claims(sub: &str, roles: &[&str]) -> Value {
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": roles,
            "iat": now(), "nbf": now() - 1, "exp": now() + 600,
        })
    }

    /// `claims` signed with the key for `alg` (RS256, ES256 or EdDSA), naming it by `kid`.
    pub fn sign(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let key = match alg {
            Algorithm::RS256 => &self.rsa,
            Algorithm::ES256 => &self.ec,
            Algorithm::EdDSA => &self.ed,
            other => panic!("the test issuer has no {other:?} key"),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    /// A genuine ES256 token for `sub` with `roles`.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.sign(Algorithm::ES256, Some("ec"), &Issuer::claims(sub, roles))
    }

    /// `claims` "signed" with `alg: none` (no signature).
    pub fn unsigned(claims: &Value) -> String {
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        format!("{header}.{}.", B64.encode(claims.to_string()))
    }

    /// `claims` signed HS256 with the RSA public key as the shared secret (the algorithm
    /// confusion forgery), naming the RSA key.
    pub fn hmac_with_public_key(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa".into());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(&self.rsa_public).unwrap(),
        )
        .unwrap()
    }

    /// A genuine token whose payload was then replaced by `claims` (signature kept).
    pub fn tampered(&self, genuine: &str, claims: &Value) -> String {
        let parts: Vec<&str> = genuine.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(claims.to_string()),
            parts[2]
        )
    }
}
