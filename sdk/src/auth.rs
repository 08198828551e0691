//! Who is calling: OpenID Connect bearer tokens (JWTs) verified inside the service.
//!
//! The identity provider's keys (a JWKS document), the expected issuer and audience come from
//! [`config`](crate::config) — `AUTH_JWKS`, `AUTH_ISSUER`, `AUTH_AUDIENCE`, and optionally
//! `AUTH_ROLES_CLAIM` (where the roles are: `roles` by default, a dotted path such as
//! `realm_access.roles` for Keycloak) — so a service needs no outbound call and runs the same on
//! every host. Accepted: RS256, ES256 and EdDSA, signed by a key of the set (by `kid`, or the
//! set's only key), with `iss`, `aud`, `exp` and `sub` present and right and `nbf` passed (60 s
//! of leeway for clocks). `alg: none`, HMAC (a public key used as a shared secret) and every
//! other algorithm are refused.
//!
//! A refusal is a 401 with `WWW-Authenticate: Bearer` (RFC 6750): `error="invalid_token"`
//! when a token was sent, no error code when none was. Which check failed is not told to the
//! caller (it would help a forger); the service's log has it. A caller without the role a
//! route needs gets a 403 with `error="insufficient_scope"`.
//!
//! Verifying costs a fixed 0.2–2 ms of pure-Rust arithmetic per request, and every request is a
//! fresh instance, so [`Request::caller`](crate::Request::caller) remembers a token it has
//! verified in the host-local bucket `doppel:local` ([`Verifier::verify_remembered`], decision
//! 0010): keyed by a hash of the key set, issuer, audience and token, so that a new key set or
//! setting misses; `exp` and `nbf` are checked again on every hit. On hosts without that bucket
//! every request verifies, as before.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::Error;

/// An authenticated caller: the token's subject, its roles and every claim.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    /// The `sub` claim: who the identity provider says this is.
    pub subject: String,
    /// The roles the token grants (from `AUTH_ROLES_CLAIM`).
    pub roles: Vec<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
}

impl Caller {
    /// A caller made by hand, for unit tests of handlers ([`Request::with_caller`]).
    ///
    /// [`Request::with_caller`]: crate::Request::with_caller
    pub fn new(subject: &str, roles: &[&str]) -> Caller {
        Caller {
            subject: subject.to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            claims: Map::new(),
        }
    }

    /// Whether the token grants `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// A claim that is text (e.g. `email`).
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// Checks tokens against one identity provider.
pub struct Verifier {
    /// The key set as configured, parsed on first need: a remembered token needs no key, and
    /// parsing one (an RSA modulus, say) on every request costs more than the rest of a hit.
    jwks: String,
    keys: std::cell::OnceCell<JwkSet>,
    issuer: String,
    audience: String,
    roles_claim: String,
    /// A hash of everything a verification depends on besides the token: where a remembered
    /// verification is valid.
    scope: Sha256,
}

/// Clock skew allowed for `exp` and `nbf`, in seconds (what `jsonwebtoken` allows by default).
const LEEWAY: u64 = 60;

/// The realm in challenges: the service, as callers address it.
const REALM: &str = "doppel";

/// 401 for a request without a token.
pub(crate) fn no_token() -> Error {
    Error::new(
        401,
        "Unauthorized",
        "this needs a bearer token (Authorization: Bearer …)",
    )
    .with_header("www-authenticate", &format!("Bearer realm=\"{REALM}\""))
}

/// 401 for a token that does not pass; `why` goes to the log only.
fn invalid(why: impl std::fmt::Display) -> Error {
    eprintln!("refused a bearer token: {why}");
    Error::new(401, "Unauthorized", "the bearer token is not valid").with_header(
        "www-authenticate",
        &format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
    )
}

/// 403 for a caller without `role`.
pub(crate) fn lacks_role(roles: &[String]) -> Error {
    Error::new(
        403,
        "Forbidden",
        format!("this needs the role {}", roles.join(" or ")),
    )
    .with_header(
        "www-authenticate",
        &format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\""),
    )
}

impl Verifier {
    /// A verifier for tokens of `issuer` for `audience`, signed by a key of `jwks` (a JWKS
    /// document, JSON).
    pub fn new(jwks: &str, issuer: &str, audience: &str) -> Result<Verifier, Error> {
        let verifier = Verifier::unparsed(jwks, issuer, audience);
        verifier.keys()?;
        Ok(verifier)
    }

    /// A verifier whose key set is checked only when a token needs it.
    fn unparsed(jwks: &str, issuer: &str, audience: &str) -> Verifier {
        let mut scope = Sha256::new();
        // Length-prefixed, so that no two settings hash alike; the label versions the rules
        // below (algorithms, required claims): a change of them must miss too.
        for part in ["doppel-sdk verified token v1", jwks, issuer, audience] {
            scope.update((part.len() as u64).to_be_bytes());
            scope.update(part);
        }
        Verifier {
            jwks: jwks.to_string(),
            keys: std::cell::OnceCell::new(),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            roles_claim: "roles".into(),
            scope,
        }
    }

    /// The key set, parsed once; a 500 naming `AUTH_JWKS` when it is not a usable one.
    fn keys(&self) -> Result<&JwkSet, Error> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys);
        }
        let keys: JwkSet = serde_json::from_str(&self.jwks).map_err(|e| {
            Error::internal(format!(
                "AUTH_JWKS is not a JWKS document (a JSON key set): {e}"
            ))
        })?;
        if keys.keys.is_empty() {
            return Err(Error::internal("AUTH_JWKS holds no key"));
        }
        Ok(self.keys.get_or_init(|| keys))
    }

    /// Reads roles from `path` (dotted, e.g. `realm_access.roles`) instead of `roles`.
    pub fn roles_from(mut self, path: &str) -> Verifier {
        self.roles_claim = path.to_string();
        self
    }

    /// The verifier the operator configured (`AUTH_JWKS`, `AUTH_ISSUER`, `AUTH_AUDIENCE`,
    /// `AUTH_ROLES_CLAIM`); a 500 naming what is missing when it is not.
    pub fn from_config() -> Result<Verifier, Error> {
        let need = |key: &str| {
            crate::config::get(key)?.ok_or_else(|| {
                Error::internal(format!(
                    "this service verifies callers but {key} is not set; deploy it with \
                     --config AUTH_JWKS=… --config AUTH_ISSUER=… --config AUTH_AUDIENCE=…"
                ))
            })
        };
        // Unparsed: a remembered token is answered without the keys (see `verify_remembered`).
        let verifier = Verifier::unparsed(
            &need("AUTH_JWKS")?,
            &need("AUTH_ISSUER")?,
            &need("AUTH_AUDIENCE")?,
        );
        Ok(match crate::config::get("AUTH_ROLES_CLAIM")? {
            Some(path) => verifier.roles_from(&path),
            None => verifier,
        })
    }

    /// The caller `token` (the JWT, without `Bearer `) stands for, or a 401.
    pub fn verify(&self, token: &str) -> Result<Caller, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let jwk = self.key(header.kid.as_deref())?;
        if let Some(declared) = jwk.common.key_algorithm
            && declared.to_string() != format!("{:?}", header.alg)
        {
            return Err(invalid(format!(
                "the key is for {declared}, the token says {:?}",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(invalid)?;
        self.caller(data.claims)
    }

    /// Like [`verify`](Verifier::verify), but first asks this host whether it has verified the
    /// same token against the same settings before (and only checks its time claims then), and
    /// remembers the token once it has verified it. Where the host keeps no `doppel:local`
    /// bucket, this is `verify`.
    pub fn verify_remembered(&self, token: &str) -> Result<Caller, Error> {
        let key = self.remembered_key(token);
        if let Some(claims) = remembered::recall(&key)
            .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
            .filter(|claims| in_time(claims, jsonwebtoken::get_current_timestamp()))
        {
            return self.caller(claims);
        }
        let caller = self.verify(token)?;
        if let Ok(bytes) = serde_json::to_vec(&caller.claims) {
            remembered::remember(&key, &bytes);
        }
        Ok(caller)
    }

    /// The bucket key a verification of `token` is remembered under: hex SHA-256.
    fn remembered_key(&self, token: &str) -> String {
        let mut hash = self.scope.clone();
        hash.update((token.len() as u64).to_be_bytes());
        hash.update(token);
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The caller verified `claims` stand for.
    fn caller(&self, claims: Map<String, Value>) -> Result<Caller, Error> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("no subject"))?
            .to_string();
        let roles = self
            .roles_claim
            .split('.')
            .try_fold(&Value::Object(claims.clone()), |v, part| v.get(part))
            .and_then(Value::as_array)
            .map(|all| {
                all.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Caller {
            subject,
            roles,
            claims,
        })
    }

    fn key(&self, kid: Option<&str>) -> Result<&Jwk, Error> {
        let keys = self.keys()?;
        match kid {
            Some(kid) => keys
                .find(kid)
                .ok_or_else(|| invalid(format!("no key {kid:?} in AUTH_JWKS"))),
            None if keys.keys.len() == 1 => Ok(&keys.keys[0]),
            None => Err(invalid(
                "the token names no key (kid) and AUTH_JWKS has several",
            )),
        }
    }
}

/// Whether verified `claims` are still within their `exp` and `nbf` at `now` (what verifying
/// checked; a claim that is not a number never passes here, it goes back to full verification).
fn in_time(claims: &Map<String, Value>, now: u64) -> bool {
    let time = |name| claims.get(name).and_then(Value::as_f64);
    let now = now as f64;
    let leeway = LEEWAY as f64;
    let unexpired = time("exp").is_some_and(|exp| exp >= now - leeway);
    let started = claims.get("nbf").is_none() || time("nbf").is_some_and(|nbf| nbf <= now + leeway);
    unexpired && started
}

/// The host-local bucket, through the same `wasi:keyvalue` import as every bucket. Failures
/// (a host without the bucket, a full one) are misses: remembering is an optimisation only.
mod remembered {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::wasi::keyvalue0_2_0_draft::store;

    /// Where verified tokens are remembered: the host-local bucket (decision 0010).
    #[cfg(target_arch = "wasm32")]
    const BUCKET: &str = "doppel:local";

    #[cfg(target_arch = "wasm32")]
    pub(super) fn recall(key: &str) -> Option<Vec<u8>> {
        store::open(BUCKET).ok()?.get(key).ok().flatten()
    }

    #[cfg(target_arch = "wasm32")]
    pub(super) fn remember(key: &str, value: &[u8]) {
        if let Ok(bucket) = store::open(BUCKET) {
            let _ = bucket.set(key, value);
        }
    }

    // A native build (the SDK's own unit tests) has no host to ask.
    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn recall(_: &str) -> Option<Vec<u8>> {
        None
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn remember(_: &str, _: &[u8]) {}
}

/// The bearer token of an `Authorization` header value, if it is one.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_scheme_with_a_token_counts() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn a_key_set_that_does_not_parse_or_is_empty_is_the_operators_error() {
        let broken = Verifier::new("{not json", "iss", "aud").err().unwrap();
        assert_eq!(broken.status, 500);
        assert!(broken.detail.contains("AUTH_JWKS"), "{broken}");
        let empty = Verifier::new(r#"{"keys":[]}"#, "iss", "aud").err().unwrap();
        assert!(empty.detail.contains("no key"), "{empty}");
    }

    #[test]
    fn a_remembered_verification_holds_only_within_its_time_claims() {
        let claims = |json: &str| serde_json::from_str::<Map<String, Value>>(json).unwrap();
        let now = 1_800_000_000;
        assert!(in_time(&claims(r#"{"exp": 1800000100}"#), now));
        assert!(
            in_time(&claims(r#"{"exp": 1799999950}"#), now),
            "within the leeway"
        );
        assert!(!in_time(&claims(r#"{"exp": 1799999000}"#), now), "expired");
        assert!(!in_time(&claims(r#"{}"#), now), "no expiry: verify again");
        assert!(!in_time(&claims(r#"{"exp": "soon"}"#), now));
        let later = r#"{"exp": 1800000900, "nbf": 1800000500}"#;
        assert!(!in_time(&claims(later), now), "not yet valid");
        assert!(in_time(&claims(later), now + 450));
    }

    #[test]
    fn a_remembered_verification_is_keyed_by_every_setting_and_the_token() {
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let base = Verifier::new(jwks, "iss", "aud").unwrap();
        let key = base.remembered_key("a.b.c");
        assert_eq!(key.len(), 64);
        assert_eq!(
            key,
            Verifier::new(jwks, "iss", "aud")
                .unwrap()
                .remembered_key("a.b.c")
        );
        assert_ne!(key, base.remembered_key("a.b.d"));
        let others = [
            Verifier::new(jwks, "iss2", "aud").unwrap(),
            Verifier::new(jwks, "iss", "aud2").unwrap(),
            Verifier::new(&jwks.replace("11qY", "22qY"), "iss", "aud").unwrap(),
            // Parts that would concatenate alike must not hash alike.
            Verifier::new(jwks, "issa", "ud").unwrap(),
        ];
        for other in others {
            assert_ne!(key, other.remembered_key("a.b.c"));
        }
    }

    #[test]
    fn refusals_carry_the_rfc_6750_challenge_and_no_reason() {
        let refused = invalid("expired");
        assert_eq!(refused.status, 401);
        assert!(!refused.detail.contains("expired"));
        let (_, challenge) = &refused.headers[0];
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let missing = no_token();
        assert!(!missing.headers[0].1.contains("error="));
        let forbidden = lacks_role(&["case-worker".into()]);
        assert_eq!(forbidden.status, 403);
        assert!(forbidden.headers[0].1.contains("insufficient_scope"));
    }
}
