//! `doppel dev-issuer`: a local identity provider for development and walk-throughs — a signing
//! key made on the spot, its JWKS for `doppel deploy --config AUTH_JWKS=…`, and tokens minted
//! with any subject, roles and claims. Not for production: the key lives in a plain file and
//! anybody who can read it can be anybody to the services.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::output::print_json;

/// The issuer and audience a development issuer uses unless told otherwise.
const ISSUER: &str = "http://localhost/dev-issuer";
const AUDIENCE: &str = "doppel-services";

/// What `doppel dev-issuer` does.
#[derive(Subcommand, Debug)]
pub enum DevIssuerAction {
    /// Make a new issuer in DIR: an ES256 signing key (owner-only) and its public JWKS. Prints
    /// the `--config` flags that make a service trust it.
    Init {
        /// The directory (created; must not hold an issuer already).
        dir: PathBuf,
        /// The `iss` of its tokens.
        #[arg(long, default_value = ISSUER)]
        issuer: String,
        /// The `aud` of its tokens.
        #[arg(long, default_value = AUDIENCE)]
        audience: String,
    },
    /// Print a token signed by the issuer in DIR.
    Token {
        /// The issuer's directory (`doppel dev-issuer init`).
        dir: PathBuf,
        /// The subject (`sub`): who the caller is.
        #[arg(long)]
        sub: String,
        /// A role the token grants (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Another claim, as text (repeatable), e.g. `--claim person_id=R-000001`.
        #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = crate::commands::deploy::parse_pair)]
        claims: Vec<(String, String)>,
        /// How long it is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// Flags of `doppel dev-issuer`.
#[derive(clap::Args, Debug)]
pub struct DevIssuer {
    #[command(subcommand)]
    action: DevIssuerAction,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// What `init` writes next to the key, and prints.
#[derive(Serialize, Deserialize)]
struct Settings {
    issuer: String,
    audience: String,
    kid: String,
}

const KEY: &str = "signing-key.der";
const JWKS: &str = "jwks.json";
const SETTINGS: &str = "issuer.json";

impl DevIssuer {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.action {
            DevIssuerAction::Init {
                dir,
                issuer,
                audience,
            } => {
                let (settings, jwks) = init(&dir, issuer, audience)?;
                if self.json {
                    return print_json(&serde_json::json!({
                        "issuer": settings.issuer,
                        "audience": settings.audience,
                        "jwks": jwks,
                    }));
                }
                println!("made a development issuer in {}", dir.display());
                println!("a service trusts it when deployed with:");
                println!(
                    "  --config AUTH_ISSUER={} --config AUTH_AUDIENCE={} --config \"AUTH_JWKS=$(cat {})\"",
                    settings.issuer,
                    settings.audience,
                    dir.join(JWKS).display()
                );
                println!(
                    "tokens: doppel dev-issuer token {} --sub ada --role case-worker",
                    dir.display()
                );
                Ok(())
            }
            DevIssuerAction::Token {
                dir,
                sub,
                roles,
                claims,
                ttl,
            } => {
                let token = mint(&dir, &sub, &roles, &claims, ttl)?;
                if self.json {
                    return print_json(&serde_json::json!({ "token": token }));
                }
                println!("{token}");
                Ok(())
            }
        }
    }
}

fn init(dir: &Path, issuer: String, audience: String) -> anyhow::Result<(Settings, JwkSet)> {
    if dir.join(KEY).exists() {
        bail!(
            "{} holds an issuer already; tokens it signed would stop working if it were replaced",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("cannot make a signing key")?;
    let der = pair.serialize_der();
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_ec_der(&der), Algorithm::ES256)
        .context("cannot describe the key as a JWK")?;
    let kid = format!("dev-{}", &hex_of(pair.public_key_raw())[..12]);
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let jwks = JwkSet { keys: vec![jwk] };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(KEY))
        .with_context(|| format!("cannot create {}", dir.join(KEY).display()))?;
    file.write_all(&der)?;
    file.sync_all()?;
    std::fs::write(dir.join(JWKS), serde_json::to_vec(&jwks)?)?;
    let settings = Settings {
        issuer,
        audience,
        kid,
    };
    std::fs::write(dir.join(SETTINGS), serde_json::to_vec_pretty(&settings)?)?;
    Ok((settings, jwks))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mint(
    dir: &Path,
    sub: &str,
    roles: &[String],
    claims: &[(String, String)],
    ttl: Duration,
) -> anyhow::Result<String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).with_context(|| {
            format!(
                "cannot read {} (`doppel dev-issuer init {}` makes it)",
                dir.join(name).display(),
                dir.display()
            )
        })
    };
    let settings: Settings = serde_json::from_slice(&read(SETTINGS)?)
        .with_context(|| format!("{} is damaged", dir.join(SETTINGS).display()))?;
    let key = EncodingKey::from_ec_der(&read(KEY)?);
    let now = jsonwebtoken::get_current_timestamp();
    let mut body = serde_json::Map::new();
    for (name, value) in claims {
        body.insert(name.clone(), value.clone().into());
    }
    for (name, value) in [
        ("iss", serde_json::json!(settings.issuer)),
        ("aud", serde_json::json!(settings.audience)),
        ("sub", serde_json::json!(sub)),
        ("roles", serde_json::json!(roles)),
        ("iat", serde_json::json!(now)),
        ("nbf", serde_json::json!(now)),
        ("exp", serde_json::json!(now + ttl.as_secs())),
    ] {
        body.insert(name.into(), value);
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(settings.kid);
    jsonwebtoken::encode(&header, &body, &key).context("cannot sign the token")
}
