//! `doppel keygen`: a key pair for signing components (Ed25519, the WebAssembly
//! tool-conventions signature format that `doppel sign` writes and hosts verify), or with
//! `--encryption` the key a cluster seals what it stores under.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

/// Flags of `doppel keygen`.
#[derive(Args, Debug)]
pub struct Keygen {
    /// Where the secret key goes (owner-only, never overwritten); the public key goes next to
    /// it, with `.pub` appended. Hand the `.pub` file to `doppel trust add`.
    pub path: PathBuf,
    /// Make the encryption key for `doppel host --key-file` instead (32 random bytes, base64,
    /// owner-only, never overwritten): every host of a cluster takes the same one, and so does
    /// a cluster restored from its backups. Lose it and the cluster's data is lost with it.
    #[arg(long)]
    pub encryption: bool,
}

impl Keygen {
    pub fn run(self) -> anyhow::Result<()> {
        if self.encryption {
            let key = doppel_host::sealing::Kek::generate();
            let mut file = create_secret(&self.path, "an encryption key")?;
            file.write_all(key.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            println!(
                "encryption key: {} (give it to every host: --key-file; keep a copy off the cluster)",
                self.path.display()
            );
            return Ok(());
        }
        let public = {
            let mut p = self.path.clone().into_os_string();
            p.push(".pub");
            PathBuf::from(p)
        };
        for path in [&self.path, &public] {
            if path.exists() {
                anyhow::bail!(
                    "{} exists; a signing key is never overwritten (components it signed would stop verifying)",
                    path.display()
                );
            }
        }
        let pair = wasmsign2::KeyPair::generate();
        let mut file = create_secret(&self.path, "a signing key")?;
        file.write_all(pair.sk.to_pem().as_bytes())?;
        file.sync_all()?;
        std::fs::write(&public, pair.pk.to_pem())
            .with_context(|| format!("cannot write {}", public.display()))?;
        println!(
            "secret key: {} (keep it off the hosts)",
            self.path.display()
        );
        println!(
            "public key: {} ({})",
            public.display(),
            doppel_api::signing::fingerprint(&pair.pk.to_bytes())
        );
        Ok(())
    }
}

/// A new owner-only file at `path`; an existing one is never overwritten.
fn create_secret(path: &std::path::Path, what: &str) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {what} at {}", path.display()))
}
